"""torchrun as mmclf starts it (``python -m mmclf.steps.torchrun <torchrun's options>``): PyTorch's own,
with its pid in the environment it hands its workers, so that each can die with it (mmclf/steps/lifeline.py).

A launcher killed outright (kill -9, the OOM killer) removes nothing; torchrun, stopped by its
parent-death signal, outlives it long enough to stop its workers and remove the launch's temp
folder (torchrun's logs, the ranks' errors), which no one else would."""
import os
import shutil

from mmclf.steps.launch import RANK_ERRORS
from mmclf.steps.lifeline import AGENT_PID

if __name__ == "__main__":
    launcher = os.getppid()
    os.environ[AGENT_PID] = str(os.getpid())
    from torch.distributed.run import main

    try:
        main()
    finally:
        if os.getppid() != launcher and RANK_ERRORS in os.environ:  # the launcher died first
            shutil.rmtree(os.environ[RANK_ERRORS], ignore_errors=True)

"""Each torchrun worker's entry point (``python -m mmclf.rank``): tied to torchrun's life first
(mmclf/lifeline.py), then one rank of the train step: join the process group and train this rank with
mmcls's distributed path (DistributedSampler, MMDistributedDataParallel, DistEvalHook). NCCL on GPUs,
gloo on the CPU.

The launcher (mmclf/dist.py) starts torchrun with ``-m mmclf.rank``; this module imports the launcher's
light helpers, never the other way round. At the top only what asking to die with torchrun needs:
that comes before any heavy import, so ``main`` imports the rest.
"""
import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from mmclf.errors import EXIT_USER_ERROR, MMClfError
from mmclf.lifeline import AGENT_PID, die_with
from mmclf.rundir import RunDir


def _join_process_group(device: str):
    import torch
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return dist


def _report(err: MMClfError) -> None:
    """A rank's user error: into the launcher's error folder, and one line on the console from rank 0
    (the others' are most often the same line)."""
    from mmclf.dist import RANK_ERRORS

    rank = os.environ["RANK"]
    if RANK_ERRORS in os.environ:
        Path(os.environ[RANK_ERRORS], f"rank-{rank}.txt").write_text(str(err))
    if rank == "0":
        print(f"mmclf: error: {err}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def main(argv=None) -> None:
    """One torchrun worker: join the process group, train this rank, leave."""
    from omegaconf import OmegaConf

    from mmclf.dist import is_rank_zero

    parser = argparse.ArgumentParser(prog="python -m mmclf.rank", description="one rank of mmclf's train step")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--config-yaml", required=True, help="the resolved config as YAML text")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if is_rank_zero() else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from mmclf.config import resolve_device

    cfg = OmegaConf.create(args.config_yaml)
    dist = _join_process_group(resolve_device(cfg.device))  # first: a rank that cannot join fails at once
    from mmclf.ddp import wrap_models_in_mmcls
    from mmclf.steps.train import train_this_process

    wrap_models_in_mmcls()
    try:
        train_this_process(cfg, RunDir(args.run_dir))
    except MMClfError as err:
        _report(err)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    die_with(int(os.environ.get(AGENT_PID, os.getppid())), signal.SIGKILL)
    main()

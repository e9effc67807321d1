"""Data-parallel training's launch: the train step on N processes per node, M nodes, through torchrun.

PyTorch's own launcher does the work: the train step runs torchrun (``python -m mmclf.steps.torchrun``) with
the step entry point, ``-m mmclf.steps train --run-dir DIR``, as each worker (one rank of the train
step, reading the run dir's config.yaml). On several nodes torchrun takes the rendezvous from the
environment Kubeflow Trainer sets on each node (``PET_NNODES``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``,
``PET_MASTER_PORT``). How many processes, and which one this is: mmclf/training/world.py.
"""
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mmclf.errors import ConfigError, StepError, StepFailed, stop_on_signals
from mmclf.run.rundir import RunDir
from mmclf.steps import entry_point
from mmclf.steps.lifeline import die_with
from mmclf.training import world
from mmclf.training.world import processes_per_node

log = logging.getLogger(__name__)
RANK_ERRORS = "MMCLF_RANK_ERRORS"  # the launch's temp folder: the ranks' user errors, torchrun's logs


class DistributedTrainingFailed(StepFailed):
    """A torchrun worker failed or was killed."""


def torchrun_command(cfg: DictConfig, run_dir) -> list[str]:
    """The torchrun command that trains ``cfg`` into ``run_dir`` on this node's processes: the step
    entry point (mmclf/steps/__main__.py) as each worker."""
    nodes = ["--standalone"] if cfg.dist.nnodes == 1 else [f"--nnodes={cfg.dist.nnodes}"]
    if cfg.dist.nnodes > 1 and "PET_MASTER_ADDR" not in os.environ:
        raise ConfigError(f"dist.nnodes={cfg.dist.nnodes}: several nodes need a rendezvous that something starting "
                          "every node provides (PET_MASTER_ADDR, PET_NODE_RANK); run them as a Kubeflow TrainJob "
                          "with backend=kfp backend.distributed=trainjob, or set dist.nnodes=1")
    return [sys.executable, "-m", "mmclf.steps.torchrun", *nodes, f"--nproc-per-node={processes_per_node(cfg)}",
            "--max-restarts=0", *entry_point("train", run_dir)]


def check_recorded_config(cfg: DictConfig, run_dir) -> None:
    """The ranks read the run dir's config.yaml: it must be ``cfg`` (prepare_data records it)."""
    recorded = RunDir(run_dir).config
    if not recorded.is_file() or recorded.read_text() != OmegaConf.to_yaml(cfg, resolve=True):
        raise StepError(f"{recorded}: not the config this train step runs with, which its torchrun ranks read "
                        "from there; run prepare_data first (it records the run's config)")


def launch(cfg: DictConfig, run_dir) -> None:
    """Train ``cfg`` on ``world_size(cfg)`` processes through torchrun; return when all finished.

    A rank's user error (mmclf's one line: a diverged loss, a full disk) comes back as this step's
    error; a rank killed or crashed ends it with torchrun's status."""
    check_recorded_config(cfg, run_dir)
    command = torchrun_command(cfg, run_dir)
    log.info("training on %d processes per node x %d node(s) through torchrun", processes_per_node(cfg),
             cfg.dist.nnodes)
    launcher = os.getpid()
    # a stop kills torchrun on the way out (its workers die with it) and removes the ranks' folder
    with stop_on_signals(), tempfile.TemporaryDirectory(prefix="mmclf-ranks-") as errors:
        env = {**os.environ, RANK_ERRORS: errors,
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(_threads_per_process(cfg))),
               # torchrun's logs in this folder, removed with it (by default a /tmp folder left behind)
               "PET_LOG_DIR": os.environ.get("PET_LOG_DIR", str(Path(errors, "torchelastic")))}
        # torchrun gets SIGTERM if this process dies: it stops its workers (which also die with it).
        result = subprocess.run(command, env=env, preexec_fn=lambda: die_with(launcher, signal.SIGTERM))
        if result.returncode == 0:
            return
        from mmclf.reports.tracking import end_recorded_run  # rank 0, ended by torchrun, may not have ended it

        end_recorded_run(cfg, RunDir(run_dir), "FAILED")
        reported = sorted(Path(errors).glob("rank-*.txt"), key=lambda path: int(path.stem.split("-")[1]))
        if reported:
            raise DistributedTrainingFailed(f"train: {reported[0].stem.replace('-', ' ')}: {reported[0].read_text()}")
    how = f"signal {signal.Signals(-result.returncode).name}" if result.returncode < 0 else \
        f"exit status {result.returncode}"
    raise DistributedTrainingFailed(f"train: torchrun ended with {how}: a rank crashed or was killed (its error, if "
                                    "any, is above). Finished epochs are checkpointed: run the same command again "
                                    "to resume")


def _threads_per_process(cfg: DictConfig) -> int:
    """CPU threads per rank: the CPUs shared out, so N ranks do not fight over every core."""
    return max(world.available_cpus() // processes_per_node(cfg), 1)

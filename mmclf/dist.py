"""Data-parallel training: the train step on N processes per node, M nodes, through torchrun.

PyTorch's own launcher does the work: the train step runs torchrun (``python -m mmclf.torchrun``) with
``-m mmclf.rank``, each worker's entry (mmclf/rank.py: one rank of the train step). On several nodes torchrun
takes the rendezvous from the environment Kubeflow Trainer sets on each node (``PET_NNODES``,
``PET_NODE_RANK``, ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``).

Global rank 0 alone writes the run dir (checkpoints, logs, records); every rank reads it.
This module stays light (no torch import at the top): the entry point validates ``dist.*`` with it.
"""
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mmclf.errors import ConfigError, MMClfError, stop_on_signals
from mmclf.lifeline import die_with
from mmclf.rundir import RunDir

log = logging.getLogger(__name__)
CPU_QUOTA = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"
RANK_ERRORS = "MMCLF_RANK_ERRORS"  # the launch's temp folder: the ranks' user errors, torchrun's logs


class DistributedTrainingFailed(MMClfError):
    """A torchrun worker failed or was killed."""


def check(cfg: DictConfig) -> None:
    """``dist.nproc_per_node``: auto or a positive integer; ``dist.nnodes``: a positive integer."""
    nproc = cfg.dist.nproc_per_node
    if nproc != "auto" and (isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1):
        raise ConfigError(f"dist.nproc_per_node={nproc!r}: use auto (one process per visible GPU, 1 without "
                          "one) or a positive integer, e.g. dist.nproc_per_node=2")
    if isinstance(cfg.dist.nnodes, bool) or cfg.dist.nnodes < 1:
        raise ConfigError(f"dist.nnodes={cfg.dist.nnodes!r}: must be a positive integer, e.g. dist.nnodes=2")


def check_fits_here(cfg: DictConfig) -> None:
    """No more processes than this machine has devices for: NCCL needs a GPU of its own for each
    process, and gloo processes beyond the CPUs this process may use only fight over them, each
    holding a model and its data in memory (999 of them exhaust it)."""
    nproc = cfg.dist.nproc_per_node
    if nproc == "auto":
        return
    from mmclf.config import resolve_device

    if resolve_device(cfg.device) == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise ConfigError(f"dist.nproc_per_node={nproc}: {gpus} GPU(s) visible here, one per process; use "
                              f"dist.nproc_per_node=auto (= {gpus}), or device=cpu for gloo processes")
    elif nproc > (cpus := _available_cpus()):
        raise ConfigError(f"dist.nproc_per_node={nproc}: {cpus} CPU(s) available to this process here, one per "
                          f"process at most; use dist.nproc_per_node={cpus} or fewer")


def processes_per_node(cfg: DictConfig) -> int:
    """``dist.nproc_per_node`` resolved here: ``auto`` is the number of visible GPUs when training on
    one (1 without a GPU, or with ``device=cpu``)."""
    nproc = cfg.dist.nproc_per_node
    if nproc != "auto":
        return int(nproc)
    from mmclf.config import resolve_device

    if resolve_device(cfg.device) != "cuda":
        return 1
    import torch

    return max(torch.cuda.device_count(), 1)


def world_size(cfg: DictConfig) -> int:
    """How many processes train together: processes per node times nodes."""
    return processes_per_node(cfg) * cfg.dist.nnodes


def is_worker() -> bool:
    """Whether this process is one of torchrun's workers (torchrun sets these for each)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_rank_zero() -> bool:
    """Whether this process writes the run dir: global rank 0, or the launcher on node 0, or a run
    that is not distributed at all."""
    if is_worker():
        return os.environ["RANK"] == "0"
    return os.environ.get("PET_NODE_RANK", "0") == "0"


def broadcast_from_rank_zero(value):
    """``value`` as rank 0 has it, on every rank (``value`` itself outside a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def torchrun_command(cfg: DictConfig, run_dir) -> list[str]:
    """The torchrun command that trains ``cfg`` into ``run_dir`` on this node's processes."""
    nodes = ["--standalone"] if cfg.dist.nnodes == 1 else [f"--nnodes={cfg.dist.nnodes}"]
    if cfg.dist.nnodes > 1 and "PET_MASTER_ADDR" not in os.environ:
        raise ConfigError(f"dist.nnodes={cfg.dist.nnodes}: several nodes need a rendezvous that something starting "
                          "every node provides (PET_MASTER_ADDR, PET_NODE_RANK); run them as a Kubeflow TrainJob "
                          "with backend=kfp backend.distributed=trainjob, or set dist.nnodes=1")
    return [sys.executable, "-m", "mmclf.torchrun", *nodes, f"--nproc-per-node={processes_per_node(cfg)}",
            "--max-restarts=0", "-m", "mmclf.rank", "--run-dir", str(run_dir),
            "--config-yaml", OmegaConf.to_yaml(cfg, resolve=True)]


def launch(cfg: DictConfig, run_dir) -> None:
    """Train ``cfg`` on ``world_size(cfg)`` processes through torchrun; return when all finished.

    A rank's user error (mmclf's one line: a diverged loss, a full disk) comes back as this step's
    error; a rank killed or crashed ends it with torchrun's status."""
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
        from mmclf.tracking import end_recorded_run  # rank 0, ended by torchrun, may not have ended it

        end_recorded_run(cfg, RunDir(run_dir), "FAILED")
        reported = sorted(Path(errors).glob("rank-*.txt"), key=lambda path: int(path.stem.split("-")[1]))
        if reported:
            raise DistributedTrainingFailed(f"train: {reported[0].stem.replace('-', ' ')}: {reported[0].read_text()}")
    how = f"signal {signal.Signals(-result.returncode).name}" if result.returncode < 0 else \
        f"exit status {result.returncode}"
    raise DistributedTrainingFailed(f"train: torchrun ended with {how}: a rank crashed or was killed (its error, if "
                                    "any, is above). Finished epochs are checkpointed: run the same command again "
                                    "to resume")


def _available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a pod's CPU limit)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = CPU_QUOTA.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(int(quota) // int(period), 1))
    except (OSError, ValueError):
        pass
    return cpus


def _threads_per_process(cfg: DictConfig) -> int:
    """CPU threads per rank: the CPUs shared out, so N ranks do not fight over every core."""
    return max(_available_cpus() // processes_per_node(cfg), 1)

"""Who trains: how many processes (``dist.nproc_per_node`` x ``dist.nnodes``) and which one this is.

Light (no torch at the top): validation checks ``dist.*`` with it, the step table records the world
size with it, and each rank asks it whether it writes the run dir. Global rank 0 alone writes the run
dir (checkpoints, logs, records); every rank reads it. The launch itself is mmclf/steps/launch.py.
"""
import os
from pathlib import Path

from omegaconf import DictConfig

from mmclf.errors import ConfigError
from mmclf.run.sweep_gpus import job_gpu

CPU_QUOTA = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


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
    from mmclf.models.config import resolve_device

    if resolve_device(cfg.device) == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise ConfigError(f"dist.nproc_per_node={nproc}: {gpus} GPU(s) visible here, one per process; use "
                              f"dist.nproc_per_node=auto (= {gpus}), or device=cpu for gloo processes")
    elif nproc > (cpus := available_cpus()):
        raise ConfigError(f"dist.nproc_per_node={nproc}: {cpus} CPU(s) available to this process here, one per "
                          f"process at most; use dist.nproc_per_node={cpus} or fewer")


def processes_per_node(cfg: DictConfig) -> int:
    """``dist.nproc_per_node`` resolved here: ``auto`` is the number of visible GPUs when training on
    one (1 without a GPU, or with ``device=cpu``)."""
    nproc = cfg.dist.nproc_per_node
    if nproc != "auto":
        return int(nproc)
    from mmclf.models.config import resolve_device

    if resolve_device(cfg.device) != "cuda" or job_gpu() is not None:  # a parallel sweep's job: its one GPU
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


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a pod's CPU limit)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = CPU_QUOTA.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(int(quota) // int(period), 1))
    except (OSError, ValueError):
        pass
    return cpus

"""Data-parallel training: the train step on N processes per node, M nodes, through torchrun.

PyTorch's own launcher does the work: the train step runs ``python -m torch.distributed.run`` (torchrun)
with ``-m mmclf.dist``, whose ``main`` joins the process group and trains one rank with mmcls's
distributed path (DistributedSampler, MMDistributedDataParallel, DistEvalHook). NCCL on GPUs, gloo
on the CPU. On several nodes torchrun takes the rendezvous from the environment Kubeflow Trainer
sets on each node (``PET_NNODES``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``).

Global rank 0 alone writes the run dir (checkpoints, logs, records); every rank reads it.
This module stays light (no torch import at the top): the entry point validates ``dist.*`` with it.
"""
import argparse
import ctypes
import logging
import os
import signal
import subprocess
import sys

from omegaconf import DictConfig, OmegaConf

from mmclf.errors import ConfigError, MMClfError, one_line_errors

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


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


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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
    return [sys.executable, "-m", "torch.distributed.run", *nodes, f"--nproc-per-node={processes_per_node(cfg)}",
            "--max-restarts=0", "-m", "mmclf.dist", "--run-dir", str(run_dir),
            "--config-yaml", OmegaConf.to_yaml(cfg, resolve=True)]


def _die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies: a killed launcher must not
    leave ranks training on (and writing checkpoints) behind the next command's back."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):  # not Linux: torchrun's own teardown is all there is
        pass


def launch(cfg: DictConfig, run_dir) -> None:
    """Train ``cfg`` on ``world_size(cfg)`` processes through torchrun; return when all finished."""
    command = torchrun_command(cfg, run_dir)
    log.info("training on %d processes per node x %d node(s) through torchrun", processes_per_node(cfg),
             cfg.dist.nnodes)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(_threads_per_process(cfg)))}
    # torchrun gets SIGTERM if this process dies: it stops its workers (which also die with it).
    result = subprocess.run(command, env=env, preexec_fn=lambda: _die_with_parent(signal.SIGTERM))
    if result.returncode != 0:
        how = f"signal {signal.Signals(-result.returncode).name}" if result.returncode < 0 else \
            f"exit status {result.returncode}"
        raise DistributedTrainingFailed(
            f"train: torchrun ended with {how}; its summary above names the failed rank and its error. "
            "Finished epochs are checkpointed: run the same command again to resume")


def _threads_per_process(cfg: DictConfig) -> int:
    """CPU threads per rank: the cores shared out, so N ranks do not fight over every core."""
    return max((os.cpu_count() or 1) // processes_per_node(cfg), 1)


def _join_process_group(device: str):
    import torch
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return dist


def main(argv=None) -> None:
    """One torchrun worker: join the process group, train this rank, leave."""
    _die_with_parent()
    parser = argparse.ArgumentParser(prog="python -m mmclf.dist", description="one rank of mmclf's train step")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--config-yaml", required=True, help="the resolved config as YAML text")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if is_rank_zero() else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    with one_line_errors():
        from mmclf.config import resolve_device
        from mmclf.rundir import RunDir

        cfg = OmegaConf.create(args.config_yaml)
        dist = _join_process_group(resolve_device(cfg.device))  # first: a rank that cannot join fails at once
        from mmclf.ddp import wrap_models_in_mmcls
        from mmclf.steps.train import train_this_process

        wrap_models_in_mmcls()
        try:
            train_this_process(cfg, RunDir(args.run_dir))
        finally:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""One GPU per job when a parallel launcher (``hydra/launcher=joblib``) runs a sweep's jobs side by side.

Each job claims a GPU with an exclusive lock on a file of the sweep dir (``.gpus/<index>.lock``): first
the one its job number points at (number mod GPUs), else the next free one, held until the job ends, so
a job that ends early frees its GPU for the next. With no more jobs at once than GPUs (refused before
the sweep starts otherwise) a free one is always there. The claim reaches the steps as ``MMCLF_GPU``:
the device they train and test on, and one process per job where ``dist.nproc_per_node=auto``.
"""
import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Optional

from mmclf.errors import ConfigError, StepFailed

GPU_ENV = "MMCLF_GPU"
log = logging.getLogger(__name__)


def job_gpu() -> Optional[int]:
    """The GPU this job claimed, or None outside a parallel sweep on GPUs."""
    value = os.environ.get(GPU_ENV)
    return int(value) if value else None


def check_parallel_jobs(n_jobs: int, gpus: int) -> None:
    """No more jobs at once than GPUs: two jobs on one GPU fight over its memory and both slow down."""
    if n_jobs < 1 or n_jobs > gpus:
        raise ConfigError(f"hydra.launcher.n_jobs={n_jobs}: {gpus} GPU(s) visible here and each parallel job "
                          f"takes one; use hydra.launcher.n_jobs={gpus} or fewer (or device=cpu)")


def claim(sweep_dir: Path, number: int, gpus: int):
    """(index, open lock file) of the first free GPU from ``number mod gpus``; the lock lasts while the file is open."""
    folder = Path(sweep_dir) / ".gpus"
    folder.mkdir(parents=True, exist_ok=True)
    for offset in range(gpus):
        index = (number + offset) % gpus
        handle = open(folder / f"{index}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return index, handle
        except BlockingIOError:
            handle.close()
    raise StepFailed(f"job {number}: all {gpus} GPUs are held by other jobs of {sweep_dir}; run at most {gpus} "
                     "jobs at once (hydra.launcher.n_jobs)")


@contextlib.contextmanager
def one_gpu_for(sweep_dir: Path, number: int, gpus: int):
    """Hold a GPU of this machine for job ``number`` of the sweep in ``sweep_dir`` while the block runs."""
    index, handle = claim(sweep_dir, number, gpus)
    log.info("job %s: GPU %s of %s (one per parallel job)", number, index, gpus)
    os.environ[GPU_ENV] = str(index)
    try:
        yield index
    finally:
        del os.environ[GPU_ENV]
        handle.close()

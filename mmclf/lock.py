"""One process per run dir at a time.

``run_dir_lock`` takes an exclusive ``flock`` on ``<run_dir>/.lock`` for as long as a job runs
there, and writes the holder (pid, host, start time) into it. A second command into the same run
dir stops with one line naming the holder. The kernel drops the lock when its process dies (kill
-9 included), so a lock file left by a killed run never blocks the next one.
"""
import contextlib
import errno
import fcntl
import json
import os
import socket
import time

from mmclf.errors import RunDirRefused
from mmclf.rundir import RunDir


def _holder(lock_file) -> str:
    lock_file.seek(0)
    try:
        holder = json.loads(lock_file.read() or "{}")
    except ValueError:
        holder = {}
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('since', '?')}"


def _take(lock_file, run_dir: RunDir) -> None:
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        raise RunDirRefused(f"{run_dir}: another mmclf job is running in this run dir ({_holder(lock_file)}); "
                            "wait for it to finish, or choose another hydra.run.dir") from None


def refuse_if_busy(run_dir: RunDir) -> None:
    """Raise RunDirRefused if a live process holds the run dir's lock; create nothing."""
    if run_dir.lock.is_file():
        with open(run_dir.lock, "r+") as lock_file:  # writable: NFS emulates flock with fcntl locks
            _take(lock_file, run_dir)  # released again when the file closes


@contextlib.contextmanager
def run_dir_lock(run_dir: RunDir):
    """Hold the run dir's lock inside the block; raise RunDirRefused if another process holds it."""
    run_dir.path.mkdir(parents=True, exist_ok=True)
    with open(run_dir.lock, "a+") as lock_file:
        _take(lock_file, run_dir)
        lock_file.truncate(0)
        lock_file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                    "since": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        lock_file.flush()
        yield

"""One process per run dir at a time.

``run_dir_lock`` takes an exclusive POSIX record lock (``fcntl.lockf``) on ``<run_dir>/.lock`` for
as long as a job runs there, and writes the holder (pid, host, start time) into it. A second
command into the same run dir stops with one line naming the holder. A record lock belongs to the
process that took it alone: the kernel drops it when that process dies (kill -9 included), and the
children it forks (DataLoader workers, which outlive a killed job by seconds) never hold it, where
an ``flock`` would be theirs too. Its one trap: a process that closes any descriptor of the file
drops its lock, so nothing opens the lock file of a run dir this process holds.
"""
import contextlib
import errno
import fcntl
import json
import os
import socket
import struct
import time
from pathlib import Path

from mmclf.errors import RunDirRefused
from mmclf.run.rundir import RunDir

_FLOCK = "hhqqi"  # Linux's struct flock: l_type, l_whence, l_start, l_len, l_pid
_held: set[Path] = set()  # run dirs whose lock this process holds


def _locking_pid(lock_file) -> int:
    """The pid of the process holding the lock, as the kernel says; 0 if none, or none it can name."""
    query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    lock_type, *_, pid = struct.unpack(_FLOCK, fcntl.fcntl(lock_file, fcntl.F_GETLK, query))
    return 0 if lock_type == fcntl.F_UNLCK else pid


def _holder(lock_file) -> str:
    lock_file.seek(0)
    try:
        holder = json.loads(lock_file.read() or "{}")
    except ValueError:
        holder = {}
    here, pid = socket.gethostname(), _locking_pid(lock_file)
    if pid and holder.get("host", here) == here and holder.get("pid") != pid:
        holder = {"pid": pid, "host": here}  # the record is a predecessor's: the holder has not written its own yet
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('since', '?')}"


def _take(lock_file, run_dir: RunDir) -> None:
    try:
        fcntl.lockf(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        raise RunDirRefused(f"{run_dir}: another mmclf job is running in this run dir ({_holder(lock_file)}); "
                            "wait for it to finish, or choose another hydra.run.dir") from None


def _refuse_if_held_here(run_dir: RunDir) -> None:
    """This process's own lock: opening the file again would drop it on closing."""
    if run_dir.lock.resolve() in _held:
        raise RunDirRefused(f"{run_dir}: this process is running a job in this run dir already")


def refuse_if_busy(run_dir: RunDir) -> None:
    """Raise RunDirRefused if a live process holds the run dir's lock; create nothing."""
    _refuse_if_held_here(run_dir)
    if run_dir.lock.is_file():
        with open(run_dir.lock, "r+") as lock_file:  # writable: an exclusive lock needs it
            _take(lock_file, run_dir)  # released again when the file closes


@contextlib.contextmanager
def run_dir_lock(run_dir: RunDir):
    """Hold the run dir's lock inside the block; raise RunDirRefused if another process holds it."""
    _refuse_if_held_here(run_dir)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    path = run_dir.lock.resolve()
    with open(path, "a+") as lock_file:
        _take(lock_file, run_dir)
        lock_file.truncate(0)
        lock_file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                    "since": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        lock_file.flush()
        _held.add(path)
        try:
            yield
        finally:
            _held.discard(path)

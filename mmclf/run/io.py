"""Atomic file writes (a reader, or a killed writer, sees the old file or the new one, never half),
the records read back, and the lock of folders that several runs prepare."""
import contextlib
import errno
import fcntl
import io
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from mmclf.errors import DataError

log = logging.getLogger(__name__)
# What creating a file in a read-only folder raises: a read-only mount, or no write permission.
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_bytes_atomic(path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None:  # a failed write names no file: name it
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def write_text_atomic(path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def write_figure_atomic(fig, path, **savefig_options) -> None:
    """Save a matplotlib figure to ``path`` as ``write_bytes_atomic`` writes (format from the suffix)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip("."), **savefig_options)
    write_bytes_atomic(path, buffer.getvalue())


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_record(path) -> dict:
    """A JSON record mmclf keeps in a run dir (job.json, steps.json): {} when absent, and {} with one
    warning when damaged (a disk fault, a hand edit): what it vouched for is then verified again."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        record = read_json(path)
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        log.warning("%s is damaged (%s); ignoring it: what it recorded is checked again", path, err)
        return {}
    return record if isinstance(record, dict) else {}


@contextlib.contextmanager
def preparers_lock(folder: Path, name: str, key: str):
    """One preparer at a time in ``folder`` (the folder config ``key`` names), shared by parallel sweep
    jobs or KFP runs on one volume: the lock file ``name`` there, held while inside.

    A read-only folder (a ReadOnlyMany claim, an NFS export) takes no lock, since no run can change
    what it holds: a complete dataset there is used as it is, and a write it would need becomes one
    line saying so."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / name, "a")
    except OSError as err:
        if err.errno not in READ_ONLY_ERRNOS:
            raise
        try:
            yield
        except OSError as write_err:
            if write_err.errno not in READ_ONLY_ERRNOS:
                raise
            raise DataError(f"{key}: {folder} is read-only and what it holds is incomplete (writing "
                            f"{write_err.filename}: {write_err.strerror}); prepare it once where {key} is writable "
                            f"(the same command), or point {key} at a writable folder") from None
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def remove_stale_temps(folder, min_age_s: float = 0) -> None:
    """Delete the temp files writes above leave when their process is killed (``.<name>.*.tmp``).
    For the one process that may write ``folder`` now (it holds the folder's lock); where no lock
    guards the folder, ``min_age_s`` spares the temp files of writes still going on."""
    for tmp in Path(folder).glob(".*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime >= min_age_s:
                tmp.unlink()
        except FileNotFoundError:  # renamed or removed meanwhile
            pass

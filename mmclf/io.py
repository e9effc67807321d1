"""Atomic file writes: a reader (or a killed writer) sees the old file or the new one, never half."""
import io
import json
import os
import tempfile
import time
from pathlib import Path

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

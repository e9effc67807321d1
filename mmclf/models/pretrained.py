"""Fine-tuning from a checkpoint: ``model.pretrained`` made a local file, loaded into the backbone.

``model.pretrained`` is a local path, an http(s) URL, or ``zoo`` (the checkpoint mmcls's model index
gives for ``model.config``). A URL is downloaded once into a cache folder and checked against the
sha256 prefix its file name carries (``name_<date>-<hex>.pth``, the convention of mmcls's zoo and of
torch.hub). The backbone then loads it through mmcv's own ``Pretrained`` init_cfg, which reads it with
mmcv's local checkpoint loader: mmclf/training/checkpoints.py's weights-only one wherever that module is imported
(the train step imports it), torch's own ``weights_only=True`` default elsewhere.
"""
import hashlib
import http.client
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Optional

from mmclf.errors import ConfigError, DataError
from mmclf.models import zoo

log = logging.getLogger(__name__)
ZOO = "zoo"
DOWNLOAD_TIMEOUT_S = 30  # per connection attempt and per read: a stalled server fails, a slow one does not
_PROGRESS_EVERY_S = 10
_CHUNK = 1 << 20
# torch.hub's convention: the hex digits after the name's last "-", before its extension, start the
# file's sha256 (at least 6 of them, so that a name like "vit-b.pth" is not taken for a hash).
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{6,})\.[^-]*$")
_NAMED = 3  # backbone tensors named in describe_load's line


def resolve_source(pretrained: str, zoo_config: Optional[str]) -> str:
    """``model.pretrained`` as a path or URL: ``zoo`` becomes the checkpoint URL of ``zoo_config`` (the
    model's ``model.config``, None when the model is not one of mmcls's zoo configs)."""
    if pretrained != ZOO:
        return pretrained
    if not zoo_config:
        raise ConfigError("model.pretrained=zoo needs model=zoo model.config=<family>/<config> (a model from "
                          "mmcls's zoo); for another model, give a checkpoint path or URL")
    url = zoo.checkpoint_url(zoo_config)
    if url is None:
        raise ConfigError(f"model.pretrained=zoo: mmcls's model index has no checkpoint for model.config={zoo_config};"
                          " give a checkpoint path or URL (python -m mmclf.zoo shows which configs have one)")
    return url


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def local_path(source: str, cache_dir: Path) -> Path:
    """Where checkpoint ``source`` is on this machine: a URL's file in ``cache_dir``, or the path itself."""
    if not _is_url(source):
        return Path(source).expanduser()
    name = PurePosixPath(urllib.parse.urlsplit(source).path).name
    if not name:
        raise ConfigError(f"model.pretrained={source}: the URL names no file; give the checkpoint file's URL")
    return Path(cache_dir) / name


def _expected_hash(path: Path) -> Optional[str]:
    """The sha256 prefix the file name carries (``resnet50_8xb32_in1k_20210831-ea4938fc.pth``), or None."""
    match = _HASH_IN_NAME.search(path.name)
    return match.group(1) if match else None


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fetch(source: str, cache_dir: Path) -> Path:
    """Make checkpoint ``source`` (a path, or a URL downloaded into ``cache_dir``) present here; its path."""
    path = local_path(source, cache_dir)
    if not _is_url(source):
        if not path.is_file():
            raise DataError(f"model.pretrained={source}: {path} is not a file; give an existing checkpoint file")
        return path
    expected = _expected_hash(path)
    if path.is_file():
        if expected is None or _sha256(path).startswith(expected):
            log.info("pretrained: using cached %s%s", path, "" if expected else " (no sha256 prefix in its name)")
            return path
        log.warning("pretrained: cached %s does not match the sha256 prefix %s in its name; downloading again",
                    path, expected)
    _download(source, path, expected)
    return path


def _download(url: str, path: Path, expected: Optional[str]) -> None:
    """Download ``url`` to a temp file beside ``path``, check its hash, then rename it to ``path``: the
    cache holds whole, verified files only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            got = _copy_url(url, out, path)
        _check_hash(url, expected, got)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _copy_url(url: str, out, path: Path) -> str:
    """Write what ``url`` serves to ``out``; its sha256 hex digest. Network failures become one DataError
    line; a failed write (a full disk) propagates as the OSError it is."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0)
            log.info("pretrained: downloading %s (%s) to %s", url, _megabytes(total), path)
            done, digest = _copy_body(response, out, total)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as err:
        raise DataError(f"model.pretrained: could not download {url} ({_reason(err)}); offline, copy the file "
                        f"to {path}") from None
    if total and done != total:  # http.client ends a cut-off body without an error
        raise DataError(f"model.pretrained: could not download {url} (the connection closed after {done} of "
                        f"{total} bytes); offline, copy the file to {path}")
    log.info("pretrained: downloaded %s (%s)", path.name, _megabytes(done))
    return digest


def _copy_body(response, out, total: int) -> tuple[int, str]:
    """Copy ``response``'s body to ``out``, logging progress now and then; (bytes copied, sha256 hex digest)."""
    digest, done, last_report = hashlib.sha256(), 0, time.monotonic()
    while chunk := response.read(_CHUNK):
        out.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        if time.monotonic() - last_report >= _PROGRESS_EVERY_S:
            log.info("pretrained: %s of %s", _megabytes(done), _megabytes(total))
            last_report = time.monotonic()
    return done, digest.hexdigest()


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size else "size unknown"


def _reason(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return f"{type(err).__name__}: {err}"


def _check_hash(url: str, expected: Optional[str], got: str) -> None:
    if expected is None:
        log.info("pretrained: %s carries no sha256 prefix in its name; its content is not checked", url)
        return
    if not got.startswith(expected):
        raise DataError(f"model.pretrained: {url} downloaded, but its sha256 starts {got[:len(expected)]}, not "
                        f"{expected} as its name says; the download is removed: check the URL, or run again")


def init_cfg(path: Path) -> dict:
    """The backbone's ``init_cfg``: mmcv loads the checkpoint's ``backbone.*`` tensors into it.

    ``map_location="cpu"``: mmcv's default keeps tensors where they were saved, and an mmcv checkpoint
    trained on a GPU keeps its optimizer state there, which a machine without that GPU cannot open."""
    return {"type": "Pretrained", "checkpoint": str(path), "prefix": "backbone", "map_location": "cpu"}


def describe_load(model, path: Path) -> str:
    """One line on what ``model.init_weights()`` took from checkpoint ``path``: the backbone tensors it
    loaded, those it could not (not in the checkpoint, or of another shape), and the head trained anew."""
    import torch  # here: the entry point imports this module and starts fast

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint)
    source = {key[len("backbone."):]: value for key, value in state.items() if key.startswith("backbone.")}
    target = model.backbone.state_dict()
    fresh = [key for key, value in target.items() if key not in source or source[key].shape != value.shape]
    named = ", ".join(fresh[:_NAMED]) + (", ..." if len(fresh) > _NAMED else "")
    head = len(model.head.state_dict())
    return (f"pretrained: backbone loaded {len(target) - len(fresh)} of {len(target)} tensors from {path}; "
            f"{len(fresh)} not in the checkpoint or of another shape{f' ({named})' if fresh else ''}; "
            f"the head's {head} tensors are trained from scratch")

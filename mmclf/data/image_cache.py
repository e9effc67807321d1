"""Your own images decoded once: each split of a folder (mmclf/data/image_folder.py) as a uint8 array cache.

prepare-data decodes each split once (any format Pillow reads, any mode, EXIF-rotated, as RGB squares
of the stored size: mmclf/data/views.py) into ``<data.cache_dir>/<split>-<key>.npy`` with a ``.json``
beside it (files, labels, unreadable files), and writes the run's manifest (``data.json`` in the run
dir) naming them. The key covers the file list, their sizes and mtimes, the labels and the stored size:
a changed file rebuilds the cache. No torch or mmcls here: the data pod stays light.
"""
import functools
import hashlib
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mmclf.data.image_folder import Listing, decode, scan
from mmclf.data.views import imagenet_style, keeps_aspect, stored_size
from mmclf.errors import DataError
from mmclf.run.io import preparers_lock, read_json, remove_stale_temps, write_json_atomic

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when decoding changes: older caches are then rebuilt (2: aspect kept from 64 px)
MAX_LISTED = 5  # unreadable files named in the message


def cache_key(root: Path, listing: Listing, size: int) -> str:
    """What the decoded split depends on: each file's path, size and mtime, the labels, ``size``."""
    digest = hashlib.sha256(f"v{CACHE_VERSION} {size}\n".encode())
    for name, label in zip(listing.files, listing.labels, strict=True):
        try:
            stat = (root / name).stat()
            digest.update(f"{name}\t{label}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        except OSError:  # missing: found unreadable when decoded
            digest.update(f"{name}\t{label}\tmissing\n".encode())
    return digest.hexdigest()[:16]


def _decode_all(root: Path, listing: Listing, out: np.ndarray, keep_aspect: bool, split: str) -> list[int]:
    """Decode every file of ``listing`` into the rows of ``out``; the indices of unreadable ones."""
    def one(index):
        try:
            out[index] = decode(root / listing.files[index], out.shape[1], keep_aspect)
            return None
        except Exception:  # truncated, corrupt, not an image after all, unreadable: listed, not fatal here
            return index

    bad, started, last_report = [], time.monotonic(), time.monotonic()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # Pillow decodes outside the GIL
        for done, result in enumerate(pool.map(one, range(len(listing.files))), start=1):
            if result is not None:
                bad.append(result)
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                rate = done / (last_report - started)
                log.info("decoding %s: %d/%d images, %.0f images/s, about %.0f s to go", split, done,
                         len(listing.files), rate, (len(listing.files) - done) / rate)
    return bad


def cache_bytes(listing: Listing, size: int) -> int:
    """The size of a split's cache file: every image as size x size x 3 bytes (and a header of 128)."""
    return len(listing.files) * size * size * 3 + 128


def check_room(cache_dir: Path, to_build: dict[str, Listing], size: int) -> None:
    """Refuse, before decoding anything, caches that would not fit in ``cache_dir``'s free space."""
    needed = sum(cache_bytes(listing, size) for listing in to_build.values())
    free = shutil.disk_usage(cache_dir).free
    if needed > free:
        images = sum(len(listing.files) for listing in to_build.values())
        raise DataError(f"data.cache_dir={cache_dir}: the decoded {' and '.join(to_build)} cache needs "
                        f"{needed / 2**20:,.0f} MiB ({images} images x {size}x{size}x3 bytes) and "
                        f"{free / 2**20:,.0f} MiB are free there; set data.cache_dir to a folder on a disk with room, "
                        "or a smaller data.image_size")


def build_cache(root: Path, listing: Listing, size: int, keep_aspect: bool, meta_path: Path, split: str) -> Path:
    """The decoded split at ``meta_path`` (``.json``, the ``.npy`` beside it), made when missing: squares of
    ``size``, with ``keep_aspect`` each image's centre square (mmclf/data/views.py)."""
    if meta_path.is_file():
        log.info("data: %s split cached (%d images, %s)", split, len(listing.files), meta_path.name)
        return meta_path
    images_path = meta_path.with_suffix(".npy")
    started = time.monotonic()
    log.info("data: decoding %d %s images once into %s (%.0f MiB)", len(listing.files), split, images_path,
             cache_bytes(listing, size) / 2**20)
    tmp = meta_path.parent / f".{images_path.name}.{os.getpid()}.tmp"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(listing.files), size, size, 3))
    try:
        bad = _decode_all(root, listing, out, keep_aspect, split)
        out.flush()
        del out
        os.replace(tmp, images_path)
    finally:
        tmp.unlink(missing_ok=True)
    # The .json last: its presence means the .npy beside it is complete.
    write_json_atomic(meta_path, {"files": listing.files, "labels": listing.labels, "bad": bad, "image_size": size})
    log.info("data: %s split decoded in %.1f s: %s, %.0f MiB", split, time.monotonic() - started, images_path.name,
             images_path.stat().st_size / 2**20)
    return meta_path


def bad_files_message(root: Path, bad: list[str]) -> str:
    listed = ", ".join(str(root / name) for name in bad[:MAX_LISTED])
    more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
    return (f"{len(bad)} image file(s) cannot be read (truncated, corrupt or not images): {listed}{more}; "
            "fix or remove them, or set data.skip_bad_images=true to train without them")


def prepare(data_cfg) -> dict:
    """Scan ``data.root``, decode what is not cached, refuse unreadable images (unless
    ``data.skip_bad_images``); the run's data manifest (classes and each split's cache)."""
    root = Path(data_cfg.root)
    classes, listings, skipped = scan(data_cfg)
    if skipped:
        log.info("data: skipped %s", ", ".join(f"{count} {kind}" for kind, count in sorted(skipped.items())))
    cache_dir, size = Path(data_cfg.cache_dir), stored_size(data_cfg)
    splits, bad_files = {}, []
    # one builder per cache at a time: parallel sweep jobs (or KFP runs on one volume) share it
    with preparers_lock(cache_dir, ".lock", "data.cache_dir"):
        remove_stale_temps(cache_dir)  # of a builder killed mid-file
        metas = {split: cache_dir / f"{split}-{cache_key(root, listing, size)}.json"
                 for split, listing in listings.items()}
        check_room(cache_dir, {split: listing for split, listing in listings.items() if not metas[split].is_file()},
                   size)
        for split, listing in listings.items():
            meta_path = build_cache(root, listing, size, keeps_aspect(size, data_cfg.image_size), metas[split],
                                     split)
            bad = read_json(meta_path)["bad"]
            bad_files += [listing.files[index] for index in bad]
            splits[split] = {"cache": str(meta_path.absolute()), "images": len(listing.files) - len(bad),
                             "skipped_unreadable": len(bad)}
    if bad_files and not data_cfg.skip_bad_images:
        raise DataError(bad_files_message(root, bad_files))
    if bad_files:
        log.warning("data: leaving out %d unreadable image(s) (data.skip_bad_images=true), e.g. %s",
                    len(bad_files), root / bad_files[0])
    counts = ", ".join(f"{split} {entry['images']}" for split, entry in splits.items())
    log.info("data: %d classes (%s); images: %s", len(classes), ", ".join(classes[:10]) +
             (", ..." if len(classes) > 10 else ""), counts)
    return {"root": str(root.absolute()), "classes": classes, "image_size": data_cfg.image_size,
            "stored_size": size, "splits": splits}


def mapped(path: Path) -> np.memmap:
    """``path`` mapped read-only, once per process and file: the train split and the validation split held
    out of it are views of one map (two maps of one file would count its pages twice in the resident set)."""
    stat = path.stat()
    return _map(str(path), stat.st_ino, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _map(path: str, inode: int, mtime_ns: int) -> np.memmap:  # a rebuilt file has a new inode: a new map
    return np.load(path, mmap_mode="r")


def load_split(manifest: dict, split: str) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """(images, labels (N,), files) of one prepared split, unreadable files left out. Each image is an
    (S, S, 3) uint8 RGB view into the cache file mapped read-only, never a copy: the pages are read when a
    sample is, and every process that maps the file (DataLoader workers, the ranks on a node, the train
    and validation splits held out of one file) shares them in the OS page cache."""
    entry = manifest["splits"].get(split)
    if entry is None:
        raise DataError(f"the data manifest has no {split} split; run prepare-data again")
    meta_path = Path(entry["cache"])
    try:
        meta = read_json(meta_path)
        images = mapped(meta_path.with_suffix(".npy"))
    except (OSError, ValueError) as err:
        raise DataError(f"{meta_path}: the decoded {split} cache is missing or damaged ({err}); run the same "
                        "command again: prepare-data rebuilds it") from None
    keep = np.setdiff1d(np.arange(len(meta["files"])), np.asarray(meta["bad"], dtype=np.int64))
    return [images[i] for i in keep], np.asarray(meta["labels"], dtype=np.int64)[keep], [meta["files"][i] for i in keep]


def default_pipelines(image_size: int, norm: dict) -> tuple[list, list]:
    """(train, test) mmcls pipelines for cached images trained at ``image_size``: below IMAGENET_FROM px
    CIFAR-style (pad-and-crop, flip), from it ImageNet-style (RandomResizedCrop + flip; to test, a
    CenterCrop of the stored square, which mmclf/data/views.py sizes as mmcls's Resize before it)."""
    normalize = {"type": "Normalize", **norm}
    if not imagenet_style(image_size):
        augment = [{"type": "RandomCrop", "size": image_size, "padding": max(1, image_size // 8)}]
        view = []
    else:
        augment = [{"type": "RandomResizedCrop", "size": image_size}]
        view = [{"type": "CenterCrop", "crop_size": image_size}]
    train = [*augment, {"type": "RandomFlip", "flip_prob": 0.5, "direction": "horizontal"}, normalize,
             {"type": "ImageToTensor", "keys": ["img"]}, {"type": "ToTensor", "keys": ["gt_label"]},
             {"type": "Collect", "keys": ["img", "gt_label"]}]
    test = [*view, normalize, {"type": "ImageToTensor", "keys": ["img"]}, {"type": "Collect", "keys": ["img"]}]
    return train, test

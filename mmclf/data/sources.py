"""Dataset preparation: make sure the configured dataset exists under ``data.root``.

cifar10 is mmcls's own ``CIFAR10`` (downloaded and md5-checked by mmcls); digits and synthetic
are generated once in CIFAR's python format and reused by later runs; your own images (folder)
are decoded once into a cache (mmclf/data/image_cache.py).
"""
import logging
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import DictConfig

from mmclf.data import cifar_format, image_cache
from mmclf.errors import DataError
from mmclf.run.io import preparers_lock, remove_stale_temps

log = logging.getLogger(__name__)
CIFAR10_FOLDER = "cifar-10-batches-py"


def ensure_cifar10(data_cfg: DictConfig) -> None:
    """Download CIFAR-10 through mmcls when absent; offline, say where to put it."""
    from mmcls.datasets import CIFAR10

    prefix = Path(data_cfg.train.data_prefix)
    try:
        CIFAR10(data_prefix=str(prefix), pipeline=[], test_mode=False)
    except Exception as err:
        raise DataError(
            f"data.root: CIFAR-10 is not under {prefix / CIFAR10_FOLDER} and could not be "
            f"downloaded ({type(err).__name__}: {err}). Offline, copy the extracted "
            f"'{CIFAR10_FOLDER}' folder (from {CIFAR10.url}) to {prefix}/, or set data.root "
            "to a folder whose cifar10/ holds it.") from None


def digits_arrays(image_size: int, test_fraction: float):
    """scikit-learn's digits as uint8 RGB images of ``image_size``, split stratified (seed 0)."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    gray = np.round(digits.images / 16.0 * 255.0).astype(np.uint8)
    resized = np.stack([
        np.asarray(Image.fromarray(img).resize((image_size, image_size), Image.BILINEAR)) for img in gray
    ])
    rgb = np.repeat(resized[..., None], 3, axis=-1)
    train_idx, test_idx = train_test_split(
        np.arange(len(rgb)), test_size=test_fraction, stratify=digits.target, random_state=0)
    labels = digits.target.astype(np.int64)
    return (rgb[train_idx], labels[train_idx]), (rgb[test_idx], labels[test_idx])


def synthetic_arrays(num_classes: int, image_size: int, num_train: int, num_test: int, seed: int = 0):
    """Learnable images: each class has its own tint and a bright square at its own place."""
    rng = np.random.default_rng(seed)
    tints = rng.uniform(60, 200, size=(num_classes, 3))
    square = max(2, image_size // 4)
    corners = rng.integers(0, image_size - square + 1, size=(num_classes, 2))

    def make(count):
        labels = np.arange(count) % num_classes
        rng.shuffle(labels)
        images = rng.normal(0, 25, size=(count, image_size, image_size, 3)) + tints[labels][:, None, None, :]
        for i, label in enumerate(labels):
            y, x = corners[label]
            images[i, y:y + square, x:x + square] = 255
        return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)

    return make(num_train), make(num_test)


def _ensure_generated(folder: Path, make_arrays, class_names, source: dict) -> None:
    remove_stale_temps(folder)  # of a writer killed mid-file; preparers take turns (the data root's lock)
    meta_path = folder / cifar_format.META_FILE
    if meta_path.exists() and cifar_format.load_pickle(meta_path).get("source") == source:
        log.info("dataset ready: %s", folder)
        return
    log.info("writing %s dataset to %s", source["name"], folder)
    train, test = make_arrays()
    cifar_format.write_folder(folder, train, test, class_names, {"source": source})


def prepare(data_cfg: DictConfig) -> Optional[dict]:
    """Make the configured dataset present and readable; raise DataError naming the fix. For your own
    images (data=folder), the run's data manifest: classes and each split's decoded cache."""
    root = Path(data_cfg.root)
    if root.exists() and not root.is_dir():
        raise DataError(f"data.root: {root} is a file; point data.root at a folder")
    if data_cfg.name == "folder":
        return image_cache.prepare(data_cfg)  # takes the cache's lock, not the data root's: it may be read-only
    # parallel sweep jobs (or KFP runs on one volume) share the root: one of them must not read a
    # dataset another is still writing
    with preparers_lock(root, ".prepare.lock", "data.root"):
        _prepare(data_cfg)
    return None


def _prepare(data_cfg: DictConfig) -> None:
    name = data_cfg.name
    if name == "cifar10":
        ensure_cifar10(data_cfg)
        return
    folder = Path(data_cfg.train.data_prefix)
    if name == "digits":
        source = {"name": name, "image_size": data_cfg.image_size, "test_fraction": data_cfg.test_fraction}
        _ensure_generated(folder, lambda: digits_arrays(data_cfg.image_size, data_cfg.test_fraction),
                          [str(d) for d in range(10)], source)
    elif name == "synthetic":
        source = {"name": name, **{k: data_cfg[k] for k in ("num_classes", "image_size", "num_train", "num_test")}}
        _ensure_generated(folder, lambda: synthetic_arrays(
            data_cfg.num_classes, data_cfg.image_size, data_cfg.num_train, data_cfg.num_test),
            [f"class_{i}" for i in range(data_cfg.num_classes)], source)
    # Any CIFAR-format folder (generated above or brought by the user) is checked here, in the
    # data step, so that a bad file fails before training starts.
    for test_mode in (False, True):
        names = cifar_format.read_split(folder, test_mode)[2]
    meta = folder / cifar_format.META_FILE
    if len(names) != data_cfg.num_classes:
        raise DataError(f"data.num_classes={data_cfg.num_classes} but {meta} names "
                        f"{len(names)} classes; set data.num_classes={len(names)}")
    height, width = cifar_format.read_meta(folder)[1]
    size = data_cfg.get("image_size")
    if size is not None and (height, width) != (size, size):
        fix = f"set data.image_size={height}" if height == width else "use a folder of square images"
        raise DataError(f"data.image_size={size} but {meta} says {height}x{width} images; {fix}")

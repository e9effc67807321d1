"""CIFAR's python batch format, for any image folder: read (validated) and write; mmclf/data/datasets.py
makes it an mmcls dataset. No torch or mmcls here: the data step (a pod of its own) stays light.

A folder holds ``data_batch_*`` (train), ``test_batch`` (test) and ``batches.meta``. Each batch
is a pickled dict with ``data`` (N x 3*H*W uint8, channel-planar, as in CIFAR) and ``labels``;
the meta file has ``label_names`` and, for sizes other than 32x32, ``image_size`` [H, W].

Pickle can run code, so files are unpickled with an allow-list that admits only plain
containers and numpy arrays; only the folders the config names are opened.
"""
import io
import pickle
from pathlib import Path

import numpy as np

from mmclf.errors import DataError
from mmclf.run.io import write_bytes_atomic

META_FILE = "batches.meta"
TEST_FILE = "test_batch"
TRAIN_GLOB = "data_batch_*"

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_pickle(path: Path) -> dict:
    """Unpickle one CIFAR-format file, naming the file in any error."""
    try:
        raw = path.read_bytes()
        entry = _ArraysOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"{path}: file missing; prepare the dataset again or check data.root") from None
    except Exception as err:
        raise DataError(f"{path}: not a readable CIFAR-format pickle ({err}); delete it to regenerate") from None
    if not isinstance(entry, dict):
        raise DataError(f"{path}: expected a dict, found {type(entry).__name__}")
    return entry


def read_meta(folder: Path) -> tuple[list[str], tuple[int, int]]:
    """Class names and (H, W) from ``batches.meta``."""
    path = folder / META_FILE
    meta = load_pickle(path)
    names = meta.get("label_names")
    if not names or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: 'label_names' must be a non-empty list of class names")
    height, width = meta.get("image_size", (32, 32))
    return list(names), (int(height), int(width))


def _labels(path: Path, raw) -> np.ndarray:
    """Class indices as int64; strings or fractions are refused, not converted or truncated."""
    labels = np.asarray(raw)
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.size == 0):
        kind = labels.dtype if labels.ndim == 1 else f"shape {labels.shape}"
        raise DataError(f"{path}: 'labels' must be a list of integer class indices, found {kind}")
    return labels.astype(np.int64)


def read_split(folder: Path, test_mode: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N, H, W, 3) uint8, labels (N,) int64 and class names of one split, validated."""
    names, (height, width) = read_meta(folder)
    paths = [folder / TEST_FILE] if test_mode else sorted(folder.glob(TRAIN_GLOB))
    if not paths:
        raise DataError(f"{folder}: no {TRAIN_GLOB} files found")
    images, labels = [], []
    for path in paths:
        entry = load_pickle(path)
        data = np.asarray(entry.get("data"))
        batch_labels = _labels(path, entry.get("labels", entry.get("fine_labels", [])))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * height * width:
            raise DataError(
                f"{path}: 'data' must be uint8 of shape (N, {3 * height * width}) for "
                f"{height}x{width} RGB images, found {data.dtype} {data.shape}")
        if len(batch_labels) != len(data):
            raise DataError(f"{path}: {len(data)} images but {len(batch_labels)} labels")
        if len(batch_labels) and (batch_labels.min() < 0 or batch_labels.max() >= len(names)):
            raise DataError(f"{path}: labels must lie in [0, {len(names) - 1}] ({len(names)} classes)")
        images.append(data.reshape(-1, 3, height, width).transpose(0, 2, 3, 1))
        labels.append(batch_labels)
    images, labels = np.concatenate(images), np.concatenate(labels)
    if len(images) == 0:
        names_of_files = ", ".join(str(path) for path in paths)
        raise DataError(f"{names_of_files}: the {'test' if test_mode else 'train'} split is empty")
    return images, labels, names


def _pickle_batch(images: np.ndarray, labels: np.ndarray) -> bytes:
    planar = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), -1)
    return pickle.dumps({"data": planar, "labels": [int(x) for x in labels]}, protocol=4)


def write_folder(folder: Path, train, test, class_names, extra_meta=None) -> None:
    """Write (images, labels) pairs in CIFAR format, each file atomically; the meta file last, so
    a folder whose meta file names this source is complete."""
    folder.mkdir(parents=True, exist_ok=True)
    height, width = train[0].shape[1:3]
    write_bytes_atomic(folder / "data_batch_1", _pickle_batch(*train))
    write_bytes_atomic(folder / TEST_FILE, _pickle_batch(*test))
    meta = {"label_names": list(class_names), "image_size": [int(height), int(width)], **(extra_meta or {})}
    write_bytes_atomic(folder / META_FILE, pickle.dumps(meta, protocol=4))

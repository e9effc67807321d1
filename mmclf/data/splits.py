"""The validation split: a stratified share of the training images, held out by a seed.

Nothing is chosen on the test split: per-epoch validation and sweep objectives read this split.
"""
import numpy as np

from mmclf.errors import DataError


def _per_class_counts(sizes: np.ndarray, fraction: float) -> np.ndarray:
    """How many images to hold out of each class: ``round(fraction * total)`` in all, shared out in
    proportion to the class sizes (largest remainders first), every class keeping a training image."""
    exact = fraction * sizes
    counts = np.minimum(np.floor(exact).astype(np.int64), sizes - 1)
    missing = int(round(fraction * sizes.sum())) - int(counts.sum())
    for label in np.argsort(-(exact - counts), kind="stable"):
        if missing <= 0:
            break
        if counts[label] < sizes[label] - 1:
            counts[label] += 1
            missing -= 1
    return counts


def stratified_holdout(labels, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices) of ``labels``, both sorted: ``fraction`` of the images held out,
    stratified by class (see _per_class_counts), the images of each class drawn by ``seed``."""
    labels = np.asarray(labels, dtype=np.int64)
    if not 0 <= fraction < 1:
        raise DataError(f"data.val_fraction={fraction}: must be in [0, 1), e.g. data.val_fraction=0.1")
    classes, sizes = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    held = [rng.permutation(np.flatnonzero(labels == label))[:count]
            for label, count in zip(classes, _per_class_counts(sizes, fraction), strict=True)]
    val = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    if fraction > 0 and len(val) == 0:
        raise DataError(f"data.val_fraction={fraction} holds out no image of the {len(labels)} training images; "
                        "raise data.val_fraction or give a val/ folder")
    return np.setdiff1d(np.arange(len(labels)), val), val

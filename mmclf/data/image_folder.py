"""Your own images: what a folder of class folders (or mmcls annotation lists) holds, and how one file
is decoded. mmclf/data/image_cache.py decodes each split once into a cache.

Layout (mmcls's CustomDataset convention): ``<data.root>/train/<class>/<image>``, ``test/<class>/...``
and optionally ``val/<class>/...``; class names are train/'s sorted folder names unless
``data.classes`` fixes them. Or, per split, an annotation list (``data.ann_file.<split>``: one
``relative/path label`` per line, paths relative to ``data.root``).
Hidden files, non-image files and empty class folders are skipped and counted. No torch or mmcls
here: the data pod stays light.
"""
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from mmclf.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")


@dataclass
class Listing:
    """One split: image paths relative to ``data.root`` and their class indices."""

    files: list[str]
    labels: list[int]


def _hidden(name: str) -> bool:
    return name.startswith(".")  # .DS_Store, ._x.jpg (macOS), .ipynb_checkpoints


def images_under(folder: Path, root: Path, skipped: Counter) -> list[str]:
    """Image files anywhere under ``folder`` (relative to ``root``, sorted); others counted in ``skipped``."""
    found = []
    for parent, dirs, names in os.walk(folder):
        skipped["hidden"] += sum(_hidden(d) for d in dirs)
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        for name in sorted(names):
            if _hidden(name):
                skipped["hidden"] += 1
            elif Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                skipped["non-image"] += 1
            else:
                found.append(str((Path(parent) / name).relative_to(root)))
    return found


def _class_folders(split_dir: Path, root: Path, skipped: Counter) -> dict[str, list[str]]:
    """{class folder name: its images} of one split folder; empty class folders are skipped."""
    if not split_dir.is_dir():
        return {}
    folders = {}
    for entry in sorted(split_dir.iterdir()):
        if _hidden(entry.name):
            skipped["hidden"] += 1
        elif not entry.is_dir():
            skipped["non-image" if entry.suffix.lower() not in IMAGE_SUFFIXES else "outside a class folder"] += 1
        else:
            images = images_under(entry, root, skipped)
            if images:
                folders[entry.name] = images
            else:
                skipped["empty class folder"] += 1
    return folders


def read_classes(classes, root: Path) -> Optional[list[str]]:
    """``data.classes``: null, a list of names, or a text file (one name per line; relative to ``data.root``)."""
    if classes is None:
        return None
    if isinstance(classes, str):
        path = Path(classes) if Path(classes).is_absolute() else root / classes
        if not path.is_file():
            raise DataError(f"data.classes={classes}: no such file ({path}); give a text file with one class name per "
                            "line, or a list: data.classes=[cat,dog]")
        classes = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    names = [str(name) for name in classes]
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if not names or duplicates:
        raise DataError(f"data.classes: {'names ' + ', '.join(duplicates) + ' twice' if duplicates else 'empty'}; "
                        "list each class once")
    return names


def _from_folders(root: Path, classes: Optional[list[str]], skipped: Counter) -> tuple[list[str], dict]:
    train = _class_folders(root / "train", root, skipped)
    if not train:
        raise DataError(f"data.root={root}: no images in class folders under {root / 'train'}; put them at "
                        "train/<class>/<image> (and test/<class>/<image>), or give data.ann_file.train")
    if classes is None:
        classes = sorted(train)
    unlisted = sorted(set(train) - set(classes))
    if unlisted:
        raise DataError(f"{root / 'train' / unlisted[0]}: a class folder that data.classes does not list; add "
                        f"{unlisted[0]!r} to data.classes or remove the folder")
    empty = [name for name in classes if name not in train]
    if empty:
        raise DataError(f"data.classes lists {empty[0]!r} but {root / 'train' / empty[0]} holds no images; remove "
                        "it from data.classes or add its images")
    listings = {"train": _listing(train, classes)}
    for split in ("val", "test"):
        folders = _class_folders(root / split, root, skipped)
        unknown = sorted(set(folders) - set(classes))
        if unknown:
            raise DataError(f"{root / split / unknown[0]}: class {unknown[0]!r} is not a class of train/ "
                            f"({', '.join(classes)}); rename or remove that folder")
        if folders:
            listings[split] = _listing(folders, classes)
    return classes, listings


def _listing(folders: dict[str, list[str]], classes: list[str]) -> Listing:
    files = [(path, classes.index(name)) for name in classes if name in folders for path in folders[name]]
    return Listing([path for path, _ in files], [label for _, label in files])


def read_ann_file(root: Path, ann_file: str, num_classes: Optional[int]) -> Listing:
    """mmcls's annotation list: ``relative/path label`` per line (paths relative to ``data.root``)."""
    path = Path(ann_file) if Path(ann_file).is_absolute() else root / ann_file
    if not path.is_file():
        raise DataError(f"data.ann_file: {path} does not exist; give a text file of 'relative/path label' lines")
    files, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        name, _, label = line.strip().rpartition(" ")
        if not name or not label.isdigit() or (num_classes is not None and int(label) >= num_classes):
            bound = f" below {num_classes} (data.classes)" if num_classes is not None else ""
            raise DataError(f"{path}:{number}: expected 'relative/path label' with an integer label{bound}, "
                            f"found {line.strip()!r}")
        files.append(name.strip())
        labels.append(int(label))
    if not files:
        raise DataError(f"{path}: no 'relative/path label' lines")
    return Listing(files, labels)


def scan(data_cfg) -> tuple[list[str], dict[str, Listing], Counter]:
    """(class names, {split: Listing}, skipped counts) of ``data.root``: folders or annotation lists."""
    root = Path(data_cfg.root)
    if not root.is_dir():
        raise DataError(f"data.root={root}: no such folder; point data.root at a folder holding train/ and test/")
    skipped = Counter()
    classes = read_classes(data_cfg.get("classes"), root)
    ann_files = data_cfg.get("ann_file") or {}
    if ann_files.get("train"):
        listings = {split: read_ann_file(root, ann_files[split], classes and len(classes))
                    for split in SPLITS if ann_files.get(split)}
        classes = classes or [str(label) for label in range(max(listings["train"].labels) + 1)]
    else:
        classes, listings = _from_folders(root, classes, skipped)
        for split in ("val", "test"):
            if ann_files.get(split):
                listings[split] = read_ann_file(root, ann_files[split], len(classes))
    if "test" not in listings:
        raise DataError(f"data.root={root}: no test images; put them at test/<class>/<image> or give "
                        "data.ann_file.test")
    return classes, listings, skipped


def decode(path: Path, size: int, keep_aspect: bool) -> np.ndarray:
    """One image file as (size, size, 3) uint8 RGB: EXIF orientation applied, any mode converted (grey,
    RGBA, palette...); squashed to the square, or with ``keep_aspect`` (ImageNet-style views,
    mmclf/data/views.py) the centre square of the full-resolution image resized as mmcls resizes.
    Raises on a file Pillow cannot read whole."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        if not keep_aspect:
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when that is still >= size
        image = ImageOps.exif_transpose(image).convert("RGB")
        if keep_aspect:
            return centre_square(np.asarray(image), size)
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        return np.asarray(image)


def centre_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """The centre (size, size) square of ``pixels`` after mmcls's ``Resize((size, -1))``: the shorter
    side resized to ``size`` with OpenCV's bilinear (as mmcv.imresize does), the longer one truncated as
    mmcls truncates it; the square's corner rounded as mmcls's CenterCrop rounds it."""
    import cv2

    height, width = pixels.shape[:2]
    if min(height, width) != size:
        if width < height:
            height, width = int(size * height / width), size
        else:
            height, width = size, int(size * width / height)
        pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)
    top, left = round((height - size) / 2), round((width - size) / 2)
    return pixels[top:top + size, left:left + size]

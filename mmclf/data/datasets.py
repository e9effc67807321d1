"""mmclf's datasets in mmcls's DATASETS, each with a validation split of its own (mmclf/data/splits.py):
``CifarFormat`` (any folder in CIFAR's python format), ``CIFAR10Split`` (mmcls's CIFAR10) and
``ImageFolderCache`` (your own images, decoded once by prepare-data: mmclf/data/image_cache.py). Each
draws a sample's augmentation from (seed, epoch, index) in any DataLoader worker (mmclf/data/sample_seeds.py).

Registered when this module is imported (the train and test steps, and mmcls's own tools through
the ``custom_imports`` of the dumped config).
"""
from pathlib import Path

import numpy as np
from mmcls.datasets import CIFAR10, DATASETS, BaseDataset

from mmclf.data import image_cache
from mmclf.data.cifar_format import read_split
from mmclf.data.sample_seeds import SeededSamples
from mmclf.data.splits import stratified_holdout
from mmclf.run.io import read_json


class HeldOutSplit:
    """``split``: train, val or test. Without a val source of its own, val is ``val_fraction`` of
    the training images (stratified, drawn by ``split_seed``) and train the rest; val_fraction 0
    validates on the test split (mmcls's CIFAR recipes). ``split`` None: mmcls's test_mode decides."""

    def __init__(self, *args, split=None, val_fraction=0.0, split_seed=0, **kwargs):
        self.split, self.val_fraction, self.split_seed = split, val_fraction, split_seed
        super().__init__(*args, **kwargs)

    def has_own_val(self) -> bool:
        return False

    def load_source(self, source: str) -> list[dict]:
        """data_infos of ``source`` (train, val or test) as stored."""
        raise NotImplementedError

    def evaluate(self, results, metric="accuracy", metric_options=None, **kwargs):
        """mmcls's evaluate, with top-k capped at the class count when not given: mmcls's tools ask for
        top-5 by default, which fails on fewer than five classes."""
        options = {"topk": (1, min(5, len(self.CLASSES))), **(metric_options or {})}
        return super().evaluate(results, metric=metric, metric_options=options, **kwargs)

    def load_annotations(self):
        split = self.split or ("test" if self.test_mode else "train")
        own_val = self.has_own_val()
        if split == "test" or (split == "val" and not own_val and not self.val_fraction):
            return self.load_source("test")
        if split == "val" and own_val:
            return self.load_source("val")
        infos = self.load_source("train")
        if own_val:  # the val/ folder is the validation split: every training image trains
            return infos
        train, val = stratified_holdout([int(info["gt_label"]) for info in infos], self.val_fraction, self.split_seed)
        return [infos[i] for i in (val if split == "val" else train)]


def _infos(images, labels, files=None) -> list[dict]:
    """mmcls's data_infos: the image in memory, its label and, when it came from a file, the file's path."""
    infos = [{"img": img, "gt_label": np.array(label, dtype=np.int64)}
             for img, label in zip(images, labels, strict=True)]
    for info, name in zip(infos, files or (), strict=False):
        info["filename"] = name
    return infos


@DATASETS.register_module()
class CifarFormat(SeededSamples, HeldOutSplit, BaseDataset):
    """mmcls dataset for any folder in CIFAR's python format (validated, no md5 list)."""

    def load_source(self, source):
        images, labels, names = read_split(Path(self.data_prefix), test_mode=source == "test")
        self.CLASSES = names
        return _infos(images, labels)


@DATASETS.register_module()
class CIFAR10Split(SeededSamples, HeldOutSplit, CIFAR10):
    """mmcls's CIFAR10 (download, md5 checks, RGB images) with a validation split."""

    def load_source(self, source):
        self.test_mode = source == "test"  # CIFAR10 reads its train or test batches by test_mode
        return CIFAR10.load_annotations(self)


@DATASETS.register_module()
class ImageFolderCache(SeededSamples, HeldOutSplit, BaseDataset):
    """Your own images as prepare-data decoded them; ``ann_file`` is the run's data manifest (data.json)."""

    def has_own_val(self):
        return read_json(self.ann_file)["splits"].get("val") is not None

    def load_source(self, source):
        manifest = read_json(self.ann_file)
        self.CLASSES = manifest["classes"]
        return _infos(*image_cache.load_split(manifest, source))

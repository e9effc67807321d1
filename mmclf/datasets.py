"""``CifarFormat``: mmcls's dataset for any folder in CIFAR's python format (mmclf/cifar_format.py),
registered in mmcls's DATASETS when this module is imported (the train and test steps, and mmcls's
own tools through the ``custom_imports`` of the dumped config)."""
from pathlib import Path

import numpy as np
from mmcls.datasets import DATASETS, BaseDataset

from mmclf.cifar_format import read_split


@DATASETS.register_module()
class CifarFormat(BaseDataset):
    """mmcls dataset for any folder in CIFAR's python format (validated, no md5 list)."""

    def load_annotations(self):
        images, labels, names = read_split(Path(self.data_prefix), self.test_mode)
        self.CLASSES = names
        pairs = zip(images, labels, strict=True)
        return [{"img": img, "gt_label": np.array(label, dtype=np.int64)} for img, label in pairs]

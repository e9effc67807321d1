"""Your own images at scale: the decoded cache mapped read-only and shared (never copied whole), a cache
that would not fit refused before decoding, and a split that would not fit on the device refused before
it is copied there. The memory the mapping saves is measured by benchmarks/cache_memory.py."""
import logging
from types import SimpleNamespace

import numpy as np
import pytest

from mmclf.data import image_cache
from mmclf.data.datasets import ImageFolderCache
from mmclf.errors import ConfigError, DataError
from mmclf.run.io import read_json, write_json_atomic
from mmclf.training.fast import device_loader
from mmclf.training.fast.augment import parse_pipeline
from tests import test_faults
from tests.conftest import compose_cfg, folder_overrides, write_image_folder

small_disk = test_faults.small_disk  # the fixture: a size-limited tmpfs


def data_cfg(root, *extra):
    return compose_cfg([*folder_overrides(root), *extra]).data


def test_the_train_and_held_out_splits_are_views_of_one_read_only_map(tmp_path):
    root = write_image_folder(tmp_path / "pets", per_split={"train": 10, "test": 2})
    manifest_path = tmp_path / "data.json"
    write_json_atomic(manifest_path, image_cache.prepare(data_cfg(root, "data.val_fraction=0.2")))
    splits = {split: ImageFolderCache(data_prefix=str(root), ann_file=str(manifest_path), pipeline=[], split=split,
                                      val_fraction=0.2, split_seed=0) for split in ("train", "val")}
    images = [info["img"] for dataset in splits.values() for info in dataset.data_infos]
    assert len(splits["val"]) == 6 and len(splits["train"]) == 24
    train_cache = read_json(manifest_path)["splits"]["train"]["cache"].replace(".json", ".npy")
    assert all(isinstance(image, np.memmap) and image._mmap is not None for image in images), "views, no copies"
    assert {str(image.filename) for image in images} == {train_cache}, "val is held out of the train file's pages"
    assert len({id(image._mmap) for image in images}) == 1, "one map of that file, not one per dataset"
    assert not any(image.flags.writeable for image in images), "mapped read-only: nothing writes the cache"
    assert splits["train"].prepare_data(0)["img"].flags.writeable, "a sample is mmcls's own copy"


def test_a_cache_that_would_not_fit_is_refused_before_decoding(tmp_path, small_disk):
    disk = small_disk("1m")
    root = write_image_folder(tmp_path / "pets", per_split={"train": 30, "test": 6})
    # 108 images x 15 KiB (stored at 72 px): 1.6 MiB
    cfg = data_cfg(root, "data.image_size=64", f"data.cache_dir={disk}")
    with pytest.raises(DataError) as refused:
        image_cache.prepare(cfg)
    message = str(refused.value)
    assert message.startswith(f"data.cache_dir={disk}: the decoded train and test cache needs 2 MiB (108 images "
                              "x 72x72x3 bytes)")
    assert "MiB are free there; set data.cache_dir to a folder on a disk with room" in message
    assert not list(disk.glob("*.npy")) and not list(disk.glob(".*.tmp")), "nothing was decoded"


def test_decoding_logs_the_caches_size(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    root = write_image_folder(tmp_path / "pets", per_split={"train": 4, "test": 2})
    image_cache.prepare(data_cfg(root, "data.image_size=32"))
    done = [r.getMessage() for r in caplog.records if "split decoded in" in r.getMessage()]
    assert len(done) == 2 and done[0].endswith(", 0 MiB") and ".npy" in done[0]


def test_a_split_that_would_not_fit_on_the_device_is_refused_naming_the_mmcls_loader(monkeypatch):
    images = [np.zeros((32, 32, 3), np.uint8)] * 100
    dataset = SimpleNamespace(data_infos=[{"img": image, "gt_label": np.int64(0)} for image in images])
    pipeline = [{"type": "RandomCrop", "size": 32, "padding": 4}, {"type": "RandomFlip", "flip_prob": 0.5},
                {"type": "Normalize", "mean": [0, 0, 0], "std": [1, 1, 1], "to_rgb": False}]
    store = 2 * 100 * 40 * 40 * 3  # two variants (flipped), padded by 4 on each side
    monkeypatch.setattr(device_loader, "free_bytes", lambda device: 2 * store - 1)  # a device just too small
    with pytest.raises(ConfigError, match=r"^data.loader=device: the training split takes 1 MiB on cpu \(100 "
                                          r"images of 32x32, padded, and mirrored\).*Set data.loader=mmcls"):
        device_loader.from_dataset(dataset, pipeline, 10, "cpu", seed=0, channels_last=False)
    monkeypatch.setattr(device_loader, "free_bytes", lambda device: 2 * store)
    loader = device_loader.from_dataset(dataset, pipeline, 10, "cpu", seed=0, channels_last=False)
    assert loader.store.numel() == store and parse_pipeline(pipeline).padding == 4


def test_the_cpus_free_memory_is_what_the_kernel_says_is_available():
    available = device_loader.free_bytes("cpu")
    with open("/proc/meminfo") as meminfo:
        total = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal:"))
    assert 0 < available <= total

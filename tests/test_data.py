"""Dataset preparation (digits, synthetic, cifar10 offline) and the CIFAR-format dataset's checks."""
import pickle

import numpy as np
import pytest
from omegaconf import OmegaConf

from mmclf.data import cifar_format, sources
from mmclf.data.datasets import CifarFormat
from mmclf.errors import DataError
from tests.conftest import closed_port_url, compose_cfg


def test_digits_conversion_is_the_real_1797_images_split_stratified():
    (train_x, train_y), (test_x, test_y) = sources.digits_arrays(image_size=16, test_fraction=0.2)
    assert len(train_x) + len(test_x) == 1797
    assert (len(train_x), len(test_x)) == (1437, 360)
    assert train_x.shape[1:] == (16, 16, 3) and train_x.dtype == np.uint8
    assert set(np.unique(train_y)) == set(range(10)) == set(np.unique(test_y))
    assert train_x.min() == 0 and train_x.max() >= 250  # 0..16 ink scaled to the full uint8 range
    assert np.array_equal(train_x[..., 0], train_x[..., 2])  # grey replicated to RGB
    # stratified: every class keeps its share of the test split (within one image)
    full = np.bincount(np.concatenate([train_y, test_y]))
    assert np.all(np.abs(np.bincount(test_y) - full * 0.2) <= 1)
    again = sources.digits_arrays(image_size=16, test_fraction=0.2)
    assert np.array_equal(again[1][0], test_x), "the split must be fixed"


def test_prepare_digits_writes_once_and_reads_back(tmp_path):
    cfg = compose_cfg(["data=digits", f"data.root={tmp_path}"])
    sources.prepare(cfg.data)
    folder = tmp_path / "digits_16px_test0.2"
    stamp = (folder / "data_batch_1").stat().st_mtime_ns
    sources.prepare(cfg.data)
    assert (folder / "data_batch_1").stat().st_mtime_ns == stamp, "prepared data must be reused"
    images, labels, names = cifar_format.read_split(folder, test_mode=True)
    assert images.shape == (360, 16, 16, 3) and names == [str(d) for d in range(10)]


def test_dataset_class_reads_a_cifar_format_folder(tmp_path):
    train, test = sources.synthetic_arrays(num_classes=3, image_size=8, num_train=12, num_test=6)
    cifar_format.write_folder(tmp_path, train, test, ["a", "b", "c"])
    dataset = CifarFormat(data_prefix=str(tmp_path), pipeline=[], test_mode=True)
    assert dataset.CLASSES == ["a", "b", "c"] and len(dataset) == 6
    assert np.array_equal(dataset.data_infos[0]["img"], test[0][0])
    assert np.array_equal(dataset.get_gt_labels(), test[1])


@pytest.fixture
def folder(tmp_path):
    train, test = sources.synthetic_arrays(num_classes=3, image_size=8, num_train=12, num_test=6)
    cifar_format.write_folder(tmp_path, train, test, ["a", "b", "c"])
    return tmp_path


def rewrite(path, **changes):
    entry = pickle.loads(path.read_bytes())
    entry.update(changes)
    path.write_bytes(pickle.dumps(entry))


@pytest.mark.parametrize("damage, message", [
    (lambda f: rewrite(f / "test_batch", data=np.zeros((6, 10), np.uint8)), "shape"),
    (lambda f: rewrite(f / "test_batch", labels=[0, 1, 2, 3, 0, 1]), "labels must lie in [0, 2]"),
    (lambda f: rewrite(f / "test_batch", labels=[0, 1]), "6 images but 2 labels"),
    (lambda f: rewrite(f / "test_batch", data=np.zeros((0, 192), np.uint8), labels=[]), "split is empty"),
    (lambda f: (f / "test_batch").write_bytes((f / "test_batch").read_bytes()[:100]), "not a readable"),
    (lambda f: (f / "test_batch").unlink(), "file missing"),
    (lambda f: rewrite(f / "batches.meta", label_names=[]), "label_names"),
    (lambda f: rewrite(f / "test_batch", labels=["a", "b", "c", "a", "b", "c"]), "integer class indices, found <U1"),
    (lambda f: rewrite(f / "test_batch", labels=[0.0, 1.5, 2.0, 0.0, 1.0, 2.0]), "integer class indices, found float"),
])
def test_bad_files_are_named_in_one_clear_error(folder, damage, message):
    damage(folder)
    with pytest.raises(DataError, match="test_batch|batches.meta") as err:
        cifar_format.read_split(folder, test_mode=True)
    assert message in str(err.value)


def test_pickles_that_would_run_code_are_refused(folder):
    class Exploit:
        def __reduce__(self):
            return (print, ("owned",))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Exploit(), "labels": []}))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        cifar_format.read_split(folder, test_mode=True)


def test_cifar10_offline_names_data_root_and_the_folder_to_place(tmp_path, monkeypatch):
    from mmcls.datasets import CIFAR10

    # a closed loopback port stands in for the unreachable internet
    monkeypatch.setattr(CIFAR10, "url", f"{closed_port_url()}/cifar-10-python.tar.gz")
    cfg = compose_cfg([f"data.root={tmp_path}"])
    with pytest.raises(DataError) as err:
        sources.prepare(cfg.data)
    message = str(err.value)
    assert "data.root" in message and "cifar-10-batches-py" in message and str(tmp_path / "cifar10") in message


def test_data_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="data.root"):
        sources.prepare(OmegaConf.create({"root": str(tmp_path / "file"), "name": "synthetic"}))


def test_num_classes_must_match_the_folder(tmp_path):
    cfg = compose_cfg(["data=synthetic", "data.num_train=20", "data.num_test=10", f"data.root={tmp_path}"])
    sources.prepare(cfg.data)
    cfg.data.name, cfg.data.num_classes = "mine", 5  # a folder of one's own, as the README shows
    cfg.data.train.data_prefix = str(next(tmp_path.glob("synthetic_*")))
    with pytest.raises(DataError, match=r"data.num_classes=5 but .*batches.meta names 10 classes"):
        sources.prepare(cfg.data)


def test_image_size_must_match_the_folder(folder, tmp_path):
    cfg = compose_cfg(["data=synthetic", "data.name=mine", "data.num_classes=3", "data.image_size=16",
                       f"data.root={tmp_path}", f"data.train.data_prefix={folder}"])
    with pytest.raises(DataError, match=r"data.image_size=16 but .*batches.meta says 8x8 images; set .*=8"):
        sources.prepare(cfg.data)

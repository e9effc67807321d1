"""Data people share is mounted read-only (a ReadOnlyMany claim, an NFS export): a complete dataset
there trains, an incomplete one stops in one line, and a tracking store that cannot be written is
refused before training."""
import pytest

from mmclf.errors import ConfigError, DataError
from mmclf.task import run
from mmclf.validate import validate
from tests.conftest import compose_cfg, folder_overrides, tiny_overrides, write_image_folder


def test_a_complete_dataset_on_a_read_only_root_trains(finished_run, data_root, read_only_view, tmp_path):
    shared = read_only_view(data_root)  # finished_run wrote the synthetic dataset there
    run(compose_cfg(tiny_overrides(shared)), tmp_path / "run")
    assert (tmp_path / "run/metrics.json").is_file()


def test_an_incomplete_dataset_on_a_read_only_root_is_one_line(data_root, read_only_view, tmp_path):
    shared = read_only_view(data_root)
    with pytest.raises(DataError, match=f"data.root: {shared} is read-only and what it holds is incomplete"):
        run(compose_cfg([*tiny_overrides(shared), "data.num_train=80"]), tmp_path / "run")  # never generated
    assert not (tmp_path / "run/work_dir").exists(), "nothing trained"


def test_images_not_yet_decoded_into_a_read_only_cache_is_one_line(tmp_path, read_only_view):
    images = write_image_folder(tmp_path / "pets", per_split={"train": 4, "test": 2})
    cache = read_only_view(tmp_path.joinpath("empty-cache").mkdir() or tmp_path / "empty-cache")
    with pytest.raises(DataError, match=f"data.cache_dir: {cache} is read-only and what it holds is incomplete"):
        run(compose_cfg(folder_overrides(images, cache_dir=cache)), tmp_path / "run")


@pytest.mark.parametrize("uri", ["sqlite:///{}/mlflow.db", "file://{}/mlruns", "{}/mlruns"])
def test_a_tracking_store_that_cannot_be_written_is_refused_before_training(tmp_path, read_only_view, uri):
    store = read_only_view(tmp_path.joinpath("store").mkdir() or tmp_path / "store")
    cfg = compose_cfg([*tiny_overrides(tmp_path / "data"), "logger=mlflow",
                       f"logger.mlflow.tracking_uri={uri.format(store)}"])
    with pytest.raises(ConfigError, match=f"logger.mlflow.tracking_uri=.*: cannot write {store}"):
        validate(cfg)

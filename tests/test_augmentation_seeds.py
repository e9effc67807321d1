"""Each sample's augmentation comes from (seed, epoch, sample index), not from a DataLoader worker's
stream: the weights depend neither on the worker count nor on persistent workers, and a run with
persistent workers (the cifar10 recipe) resumes bit-identical too."""
import pytest

from mmclf.task import run
from tests.conftest import compose_cfg, tiny_overrides
from tests.test_resume import assert_same_weights, killed_copy

PERSISTENT_WORKERS = ["data.workers_per_gpu=2", "data.persistent_workers=true"]


def two_epochs(data_root, *overrides):
    return compose_cfg([*tiny_overrides(data_root), "schedule.runner.max_epochs=2", *overrides])


@pytest.fixture(scope="module")
def with_workers(tmp_path_factory, data_root):
    """An uninterrupted two-epoch run with two persistent DataLoader workers."""
    run_dir = tmp_path_factory.mktemp("persistent-workers") / "run"
    run(two_epochs(data_root, *PERSISTENT_WORKERS), run_dir)
    return run_dir


def test_a_run_with_persistent_workers_killed_after_epoch_1_resumes_bit_identical(with_workers, tmp_path, data_root):
    run_dir = killed_copy(with_workers, tmp_path, keep_epochs=1)
    run(two_epochs(data_root, *PERSISTENT_WORKERS), run_dir)
    assert_same_weights(run_dir, with_workers)


def test_the_weights_do_not_depend_on_the_worker_count(with_workers, tmp_path, data_root):
    run(two_epochs(data_root, "data.workers_per_gpu=0", "data.persistent_workers=false"), tmp_path / "run")
    assert_same_weights(tmp_path / "run", with_workers)


@pytest.mark.parametrize("persistent, pauses", [(True, []), (False, [2, 2])])
def test_mmcvs_epoch_pause_is_kept_only_for_workers_released_at_each_epochs_end(persistent, pauses, monkeypatch,
                                                                                tmp_path, data_root):
    from mmcv.runner import epoch_based_runner

    slept = []
    monkeypatch.setattr(epoch_based_runner.time, "sleep", slept.append)  # the time module: every sleep, recorded
    run(two_epochs(data_root, "data.workers_per_gpu=1", f"data.persistent_workers={persistent}"), tmp_path / "run")
    assert [seconds for seconds in slept if seconds == 2] == pauses, slept

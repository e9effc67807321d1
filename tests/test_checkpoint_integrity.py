"""Silent damage: each checkpoint's sha256 recorded when it is written and checked before it is
resumed or tested; a finished run counts as finished only while its final checkpoint verifies; a
run dir that trained longer than the config asks is refused, not cut back."""
import hashlib
import logging
import shutil
import subprocess

import pytest

from mmclf.checkpoints import resume_checkpoint
from mmclf.config import weights_fingerprint
from mmclf.errors import RunDirRefused, StepError
from mmclf.rundir import RunDir
from mmclf.steps import test as test_module
from mmclf.steps.train import train
from mmclf.task import finished_metrics, run
from tests.conftest import compose_cfg, tiny_overrides
from tests.test_reliability import assert_same_weights, snapshot


def two_epochs(data_root):
    return compose_cfg([*tiny_overrides(data_root), "schedule.runner.max_epochs=2"])


@pytest.fixture(scope="module")
def two_epoch_run(finished_run, tmp_path_factory, data_root):
    """``finished_run`` trained one epoch more: epoch_1.pth and epoch_2.pth, finished; tests only read it."""
    run_dir = shutil.copytree(finished_run, tmp_path_factory.mktemp("two-epochs") / "run", symlinks=True)
    run(two_epochs(data_root), run_dir)
    return RunDir(run_dir)


@pytest.fixture
def copy_of_two_epoch_run(two_epoch_run, tmp_path):
    return RunDir(shutil.copytree(two_epoch_run.path, tmp_path / "run", symlinks=True))


def overwrite_4k_inside(path):
    """4 KB of the file's middle overwritten, its size unchanged: damage a truncation check cannot see."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(4096)
    path.write_bytes(bytes(data))


def warnings_naming(caplog, name):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and name in r.getMessage()]


def test_every_checkpoint_has_its_sha256_beside_it_as_sha256sum_writes_it(two_epoch_run):
    work_dir = two_epoch_run.work_dir
    for epoch in (1, 2):
        checkpoint = two_epoch_run.checkpoint(epoch)
        recorded = RunDir.checkpoint_hash(checkpoint).read_text()
        assert recorded == f"{hashlib.sha256(checkpoint.read_bytes()).hexdigest()}  {checkpoint.name}\n"
    checked = subprocess.run(["sha256sum", "-c", *(p.name for p in work_dir.glob("*.sha256"))], cwd=work_dir,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert sorted(p.name for p in work_dir.glob("*.sha256")) == ["epoch_1.pth.sha256", "epoch_2.pth.sha256"]


def test_pruned_checkpoints_take_their_sha256_with_them(copy_of_two_epoch_run, data_root):
    work_dir = copy_of_two_epoch_run.work_dir
    RunDir.checkpoint_hash(work_dir / "epoch_3.pth").write_text("left by a kill before epoch_3.pth was renamed\n")
    cfg = compose_cfg([*tiny_overrides(data_root), "schedule.runner.max_epochs=3",
                       "runtime.checkpoint_config.max_keep_ckpts=1"])
    train(cfg, copy_of_two_epoch_run)  # mmcv's CheckpointHook prunes epoch_1.pth and epoch_2.pth
    assert sorted(p.name for p in work_dir.glob("epoch_*")) == ["epoch_3.pth", "epoch_3.pth.sha256"]


def test_fewer_epochs_than_the_run_dir_trained_are_refused_touching_nothing(copy_of_two_epoch_run, data_root):
    before = snapshot(copy_of_two_epoch_run.path)
    with pytest.raises(RunDirRefused) as refused:
        run(compose_cfg(tiny_overrides(data_root)), copy_of_two_epoch_run)  # max_epochs=1
    message = str(refused.value)
    assert "epoch_2.pth" in message and "schedule.runner.max_epochs=1" in message and "\n" not in message
    assert snapshot(copy_of_two_epoch_run.path) == before, "checkpoints, latest.pth and metrics stay as they were"


def test_a_checkpoint_with_damaged_bytes_inside_is_skipped_for_the_previous(copy_of_two_epoch_run, data_root,
                                                                            caplog):
    work_dir = copy_of_two_epoch_run.work_dir
    overwrite_4k_inside(work_dir / "epoch_2.pth")
    cfg = two_epochs(data_root)
    assert resume_checkpoint("auto", work_dir, weights_fingerprint(cfg), 2) == work_dir / "epoch_1.pth"
    (line,) = warnings_naming(caplog, "epoch_2.pth")
    assert "sha256" in line
    with pytest.raises(StepError, match="epoch_2.pth: the final checkpoint does not load .*sha256"):
        test_module.test(cfg, copy_of_two_epoch_run)


def test_a_checkpoint_without_a_recorded_sha256_still_resumes(copy_of_two_epoch_run, data_root, caplog):
    work_dir = copy_of_two_epoch_run.work_dir
    RunDir.checkpoint_hash(work_dir / "epoch_2.pth").unlink()  # as a version before the hashes left it
    weights = weights_fingerprint(two_epochs(data_root))
    assert resume_checkpoint("auto", work_dir, weights, 2) == work_dir / "epoch_2.pth"
    assert not warnings_naming(caplog, "epoch_2.pth")


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_finished_run_whose_final_checkpoint_is_damaged_trains_it_again(two_epoch_run, copy_of_two_epoch_run,
                                                                          data_root, caplog, damage):
    run_dir = copy_of_two_epoch_run
    final = run_dir.checkpoint(2)
    if damage == "truncated":
        final.write_bytes(final.read_bytes()[:1000])
    else:
        overwrite_4k_inside(final)
    caplog.set_level(logging.INFO)
    assert finished_metrics(two_epochs(data_root), run_dir) is None, "not finished while epoch_2.pth is damaged"
    tested = run_dir.eval_result.stat().st_mtime_ns
    run(two_epochs(data_root), run_dir)
    assert run_dir.eval_result.stat().st_mtime_ns != tested, "the steps after train run again on its new checkpoint"
    assert "already holds a finished run" not in caplog.text
    assert len(warnings_naming(caplog, "epoch_2.pth")) == 1, "one line says the final checkpoint is damaged"
    assert f"resuming from {run_dir.checkpoint(1)}" in caplog.text
    assert_same_weights(run_dir.path, two_epoch_run.path)  # epoch 2 trained again from epoch_1.pth
    assert run_dir.latest_checkpoint.resolve() == final
    assert RunDir.checkpoint_hash(final).read_text().split()[0] == hashlib.sha256(final.read_bytes()).hexdigest()

"""Damaged and verified checkpoints: each checkpoint's sha256 is recorded when it is written and checked
before it is resumed or tested; a damaged checkpoint (truncated, or bytes overwritten inside) is skipped
for the previous one with a warning; a finished run counts as finished only while its final checkpoint
verifies, and the same command retrains from the newest good one; a malicious final checkpoint is
refused in one line, never executed."""
import hashlib
import logging
import pickle
import shutil
import subprocess

import pytest

from mmclf.errors import StepError
from mmclf.models.config import weights_fingerprint
from mmclf.run.rundir import RunDir
from mmclf.steps import test as test_module
from mmclf.steps.train import train
from mmclf.task import finished_metrics, run
from mmclf.training.checkpoints import record_hash, resume_checkpoint
from tests.conftest import compose_cfg, tiny_overrides, two_epochs
from tests.test_resume import assert_same_weights


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


def test_a_damaged_final_checkpoint_sends_the_rerun_back_to_the_newest_good_one(uninterrupted, tmp_path, data_root):
    loader, reference = uninterrupted
    run_dir = RunDir(shutil.copytree(reference, tmp_path / "run", symlinks=True))
    final = run_dir.checkpoint(2)
    final.write_bytes(final.read_bytes()[:1000])
    (run_dir.job_record).unlink()  # as after the test step failed on it
    with pytest.raises(StepError, match="epoch_2.pth: the final checkpoint does not load .* run the same command"):
        test_module.test(two_epochs(data_root, loader), run_dir)
    run(two_epochs(data_root, loader), run_dir)
    assert_same_weights(run_dir, reference)  # epoch 2 trained again from epoch_1.pth


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_malicious_final_checkpoint_is_refused_in_one_line(copy_of_finished_run, data_root, capsys):
    final = RunDir(copy_of_finished_run).checkpoint(1)
    final.write_bytes(pickle.dumps({"state_dict": _RunsCode(), "meta": {"epoch": 1}}))
    record_hash(final, final)  # whoever can write the checkpoint can write its hash: weights_only still refuses it
    with pytest.raises(StepError, match=r"epoch_1.pth: the final checkpoint does not load \(UnpicklingError"):
        test_module.test(compose_cfg(tiny_overrides(data_root)), RunDir(copy_of_finished_run))
    assert "this must never run" not in capsys.readouterr().out


def test_a_truncated_newest_checkpoint_is_skipped_for_the_previous(uninterrupted, tmp_path, data_root, caplog):
    loader, reference = uninterrupted
    work_dir = RunDir(shutil.copytree(reference, tmp_path / "run", symlinks=True)).work_dir
    newest = work_dir / "epoch_2.pth"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    weights = weights_fingerprint(two_epochs(data_root, loader))
    assert resume_checkpoint("auto", work_dir, weights, 2) == work_dir / "epoch_1.pth"
    assert "skipping damaged checkpoint" in caplog.text and "epoch_2.pth" in caplog.text
    assert resume_checkpoint("never", work_dir, weights, 2) is None

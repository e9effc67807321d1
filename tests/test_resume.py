"""Resume: a killed or re-run job continues where it stopped. A run killed anywhere (the CLI by SIGKILL in
its last epoch, in epoch 1 or 2, while a checkpoint is written, between a checkpoint's rename and
latest.pth, before mmcv pruned old checkpoints) ends bit-identical to an uninterrupted one; the same
command over a finished run skips every step; more epochs resume from the finished ones; latest.pth is a
copy where the volume has no symlinks; checkpoints sort by epoch number."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from mmclf.run.rundir import RunDir
from mmclf.task import run
from mmclf.training.checkpoints import epoch_checkpoints
from tests.conftest import REPO, compose_cfg, tiny_overrides, two_epochs
from tests.test_end_to_end import assert_complete_run_dir


def trained_epochs(work_dir):
    """Epoch numbers of the training entries in every mmcv json log of ``work_dir``."""
    epochs = []
    for log in sorted(work_dir.glob("*.log.json")):
        entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        epochs += sorted({e["epoch"] for e in entries if e.get("mode") == "train"})
    return epochs


def wait_for_log_entry(work_dir, epoch, timeout):
    """Wait until mmcv's json log records a training iteration of ``epoch`` (logged every iteration)."""
    deadline = time.monotonic() + timeout
    while epoch not in trained_epochs(work_dir):
        assert time.monotonic() < deadline, f"no iteration of epoch {epoch} logged within {timeout} s"
        time.sleep(0.05)


def weights(run_dir, epoch):
    return torch.load(RunDir(run_dir).checkpoint(epoch), map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(run_dir, reference, epoch=2):
    ours, theirs = weights(run_dir, epoch), weights(reference, epoch)
    assert ours.keys() == theirs.keys()
    different = [key for key in ours if not torch.equal(ours[key], theirs[key])]
    assert not different, f"resumed weights differ from the uninterrupted run's in {different[:3]}"


def killed_copy(reference, tmp_path, keep_epochs):
    """A copy of ``reference`` as a kill would leave it: checkpoints up to ``keep_epochs``,
    latest.pth on the newest of them, no record of train, test or metrics having finished."""
    run_dir = RunDir(shutil.copytree(reference, tmp_path / "run", symlinks=True))
    for epoch, path in epoch_checkpoints(run_dir.work_dir):
        if epoch > keep_epochs:
            path.unlink()
    run_dir.latest_checkpoint.unlink()
    if keep_epochs:
        run_dir.latest_checkpoint.symlink_to(run_dir.checkpoint(keep_epochs).name)
    for path in (run_dir.job_record, run_dir.metrics, run_dir.eval_result):
        path.unlink()
    steps = json.loads(run_dir.steps_record.read_text())
    run_dir.steps_record.write_text(json.dumps({"prepare_data": steps["prepare_data"]}))
    return run_dir


@pytest.mark.slow
def test_sigkill_in_the_last_epoch_resumes_trains_exactly_max_epochs_and_ends_bit_identical(tmp_path, data_root):
    run_dir = tmp_path / "run"
    # 144 iterations an epoch of 2 images: killed after epoch 2's first, the other 143 take ~1 s.
    args = [sys.executable, "-m", "mmclf", *tiny_overrides(data_root), "data.num_train=320",
            "data.samples_per_gpu=2", "schedule.runner.max_epochs=2", f"hydra.run.dir={run_dir}"]
    first = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_log_entry(run_dir / "work_dir", epoch=2, timeout=240)  # an iteration of epoch 2 is done
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (run_dir / "work_dir/epoch_2.pth").exists(), "killed too late: epoch 2 had finished"
    assert not (run_dir / "metrics.json").exists()

    second = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr + second.stdout
    assert trained_epochs(run_dir / "work_dir") == [1, 2, 2], "the second run must train epoch 2 only"
    checkpoint = torch.load(run_dir / "work_dir/epoch_2.pth", map_location="cpu", weights_only=True)
    assert checkpoint["meta"]["epoch"] == 2 and not (run_dir / "work_dir/epoch_3.pth").exists()
    assert_complete_run_dir(run_dir, num_test=32)
    uninterrupted = tmp_path / "uninterrupted"
    run(compose_cfg(args[3:-1]), uninterrupted)  # the same overrides, in one go
    assert_same_weights(run_dir, uninterrupted, epoch=2)


def test_a_run_killed_in_epoch_1_ends_bit_identical(uninterrupted, tmp_path, data_root):
    loader, reference = uninterrupted
    run_dir = killed_copy(reference, tmp_path, keep_epochs=0)
    run(two_epochs(data_root, loader), run_dir)
    assert_same_weights(run_dir, reference)


def test_a_run_killed_in_epoch_2_resumes_bit_identical(uninterrupted, tmp_path, data_root):
    loader, reference = uninterrupted
    run_dir = killed_copy(reference, tmp_path, keep_epochs=1)
    run(two_epochs(data_root, loader), run_dir)
    assert_same_weights(run_dir, reference)
    assert_complete_run_dir(run_dir.path, num_test=32)


def test_a_kill_while_writing_a_checkpoint_leaves_nothing_behind(uninterrupted, tmp_path, data_root):
    loader, reference = uninterrupted
    run_dir = killed_copy(reference, tmp_path, keep_epochs=1)
    half = RunDir(reference).checkpoint(2).read_bytes()[:1000]
    (run_dir.work_dir / ".epoch_2.pth.tmp").write_bytes(half)  # the temp name SafeEpochBasedRunner writes
    (run_dir.work_dir / ".latest.pth.tmp").symlink_to("epoch_1.pth")
    run(two_epochs(data_root, loader), run_dir)
    assert_same_weights(run_dir, reference)
    assert not list(run_dir.work_dir.glob(".*.tmp")), "temp files of the killed write are cleaned"


def test_a_kill_between_the_rename_and_latest_is_mended(uninterrupted, tmp_path, data_root):
    loader, reference = uninterrupted
    run_dir = killed_copy(reference, tmp_path, keep_epochs=2)
    run_dir.latest_checkpoint.unlink()
    run_dir.latest_checkpoint.symlink_to("epoch_1.pth")  # epoch_2.pth renamed, latest.pth not yet moved
    run(two_epochs(data_root, loader), run_dir)
    assert run_dir.latest_checkpoint.resolve() == run_dir.checkpoint(2)
    assert_same_weights(run_dir, reference)


def test_max_keep_ckpts_holds_after_a_kill_before_the_old_checkpoint_was_pruned(uninterrupted, tmp_path, data_root):
    loader, reference = uninterrupted
    run_dir = killed_copy(reference, tmp_path, keep_epochs=2)
    cfg = compose_cfg([*tiny_overrides(data_root), "schedule.runner.max_epochs=2", f"data.loader={loader}",
                       "runtime.checkpoint_config.max_keep_ckpts=1"])
    run(cfg, run_dir)
    assert [path.name for _, path in epoch_checkpoints(run_dir.work_dir)] == ["epoch_2.pth"]


def test_rerun_of_a_finished_run_skips_every_step(copy_of_finished_run, data_root):
    cfg, run_dir = compose_cfg(tiny_overrides(data_root)), copy_of_finished_run
    first = json.loads((run_dir / "job.json").read_text())["objective"]
    stamps = {name: (run_dir / name).stat().st_mtime_ns for name in ("metrics.json", "eval_result.json", "model.onnx")}
    assert run(cfg, run_dir) == first  # the whole job is skipped through job.json
    # A Kubeflow pod retried on the same volume has no job.json to go by: steps.json skips each step.
    (run_dir / "job.json").unlink()
    assert run(cfg, run_dir) == first
    assert {name: (run_dir / name).stat().st_mtime_ns for name in stamps} == stamps
    assert len(list((run_dir / "work_dir").glob("*.log.json"))) == 1, "training ran once"
    assert set(json.loads((run_dir / "steps.json").read_text())) == {"prepare_data", "train", "test", "export",
                                                                    "metrics"}


def test_more_epochs_resume_from_the_finished_ones(copy_of_finished_run, data_root):
    run(compose_cfg([*tiny_overrides(data_root), "schedule.runner.max_epochs=2", "data.workers_per_gpu=1",
                     "data.persistent_workers=true"]), copy_of_finished_run)
    assert trained_epochs(copy_of_finished_run / "work_dir") == [1, 2], "epoch 1 resumed, only epoch 2 trained again"
    assert_complete_run_dir(copy_of_finished_run, num_test=32)


def test_latest_is_a_copy_where_the_volume_has_no_symlinks(tmp_path, data_root, monkeypatch):
    def no_symlinks(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    run(compose_cfg(tiny_overrides(data_root)), tmp_path / "run")
    latest = RunDir(tmp_path / "run").latest_checkpoint
    assert not latest.is_symlink() and latest.read_bytes() == RunDir(tmp_path / "run").checkpoint(1).read_bytes()


def test_checkpoints_sort_by_epoch_number_not_text(tmp_path):
    for epoch in (9, 10, 2):
        (tmp_path / f"epoch_{epoch}.pth").touch()
    assert [epoch for epoch, _ in epoch_checkpoints(tmp_path)] == [10, 9, 2]

"""Injected faults: a killed training process, a damaged checkpoint, a NaN loss, corrupt data,
a full disk. Each must end in resumed work or one clear error, never in a torn run dir."""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from mmclf import data
from mmclf.checkpoints import CheckpointWriteError, resume_checkpoint
from mmclf.config import weights_fingerprint
from mmclf.errors import ConfigError, DataError
from mmclf.hooks import TrainingDiverged
from mmclf.task import run
from tests.conftest import REPO, compose_cfg, tiny_overrides
from tests.test_end_to_end import assert_complete_run_dir
from tests.test_reliability import assert_same_weights


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


@pytest.mark.slow
def test_sigkill_in_the_last_epoch_resumes_trains_exactly_max_epochs_and_ends_bit_identical(tmp_path, data_root):
    run_dir = tmp_path / "run"
    # Full width, 20 iterations an epoch: killed after epoch 2's first, the other 19 take ~1 s.
    args = [sys.executable, "-m", "mmclf", *tiny_overrides(data_root, narrow=False), "data.num_train=320",
            "data.samples_per_gpu=16", "schedule.runner.max_epochs=2", f"hydra.run.dir={run_dir}"]
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


@pytest.mark.parametrize("change", ["data.num_classes=5", "schedule.optimizer.lr=0.2", "seed=7",
                                    "model=resnet34_cifar"])
def test_checkpoints_of_another_recipe_are_not_resumed_over(copy_of_finished_run, data_root, change):
    with pytest.raises(ConfigError, match="epoch_1.pth was trained with another model, data, schedule or seed"):
        run(compose_cfg([*tiny_overrides(data_root), change]), copy_of_finished_run)
    assert (copy_of_finished_run / "metrics.json").is_file(), "the earlier run's outputs stay"


def test_more_epochs_resume_from_the_finished_ones(copy_of_finished_run, data_root):
    run(compose_cfg([*tiny_overrides(data_root), "schedule.runner.max_epochs=2", "data.workers_per_gpu=1",
                     "data.persistent_workers=true"]), copy_of_finished_run)
    assert trained_epochs(copy_of_finished_run / "work_dir") == [1, 2], "epoch 1 resumed, only epoch 2 trained again"
    assert_complete_run_dir(copy_of_finished_run, num_test=32)


def test_nan_loss_stops_training_at_once(tmp_path, data_root):
    cfg = compose_cfg([*tiny_overrides(data_root), "schedule.optimizer.lr=1e30"])
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at epoch 1, iteration \d+ \(lr"):
        run(cfg, tmp_path / "run")
    assert not list((tmp_path / "run/work_dir").glob("*.pth")), "no checkpoint of a diverged model"


def test_corrupt_dataset_batch_fails_in_the_data_step(tmp_path):
    cfg = compose_cfg(tiny_overrides(tmp_path / "data"))
    data.prepare(cfg.data)
    batch = next((tmp_path / "data").glob("synthetic_*/data_batch_1"))
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DataError, match=f"{batch}: not a readable CIFAR-format pickle"):
        run(cfg, tmp_path / "bad")
    assert not (tmp_path / "bad/work_dir").exists(), "training must not start on corrupt data"
    assert not (tmp_path / "bad/config.yaml").exists(), "data the run cannot use leaves no config.yaml"


@pytest.fixture
def small_disk(tmp_path):
    """A 150 MB tmpfs: room for one ResNet-18 checkpoint with optimizer state (89 MB), not two."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150m", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a size-limited tmpfs here (needs root)")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(small_disk, data_root):
    cfg = compose_cfg([*tiny_overrides(data_root, narrow=False), "schedule.runner.max_epochs=2"])
    with pytest.raises(CheckpointWriteError, match="epoch_2.pth failed .* previous checkpoint epoch_1.pth is intact"):
        run(cfg, small_disk / "run")
    work_dir = small_disk / "run/work_dir"
    weights = weights_fingerprint(cfg)
    assert resume_checkpoint("auto", work_dir, weights, 2) == work_dir / "epoch_1.pth"
    assert not list(work_dir.glob(".*.tmp")), "the half-written temp file must be removed"
    assert (work_dir / "latest.pth").resolve() == work_dir / "epoch_1.pth"

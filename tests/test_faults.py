"""Faults that end in one line: a NaN loss, a corrupt dataset, a full disk while checkpointing or while
preparing data each stop the job with one clear error, never a traceback or a torn run dir; temp files a
killed data preparer left behind are removed by the next one."""
import subprocess

import pytest

from mmclf.data import sources
from mmclf.errors import DataError
from mmclf.models.config import weights_fingerprint
from mmclf.task import run
from mmclf.training.checkpoints import CheckpointWriteError, resume_checkpoint
from mmclf.training.hooks import TrainingDiverged
from tests.conftest import compose_cfg, run_cli, tiny_overrides


def test_nan_loss_stops_training_at_once(tmp_path, data_root):
    cfg = compose_cfg([*tiny_overrides(data_root), "schedule.optimizer.lr=1e30"])
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at epoch 1, iteration \d+ \(lr"):
        run(cfg, tmp_path / "run")
    assert not list((tmp_path / "run/work_dir").glob("*.pth")), "no checkpoint of a diverged model"


def test_corrupt_dataset_batch_fails_in_the_data_step(tmp_path):
    cfg = compose_cfg(tiny_overrides(tmp_path / "data"))
    sources.prepare(cfg.data)
    batch = next((tmp_path / "data").glob("synthetic_*/data_batch_1"))
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DataError, match=f"{batch}: not a readable CIFAR-format pickle"):
        run(cfg, tmp_path / "bad")
    assert not (tmp_path / "bad/work_dir").exists(), "training must not start on corrupt data"
    assert not (tmp_path / "bad/config.yaml").exists(), "data the run cannot use leaves no config.yaml"


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(size)``: a new tmpfs of ``size`` (as ``mount -o size=`` reads it, e.g. ``"2m"``), unmounted
    after the test; the test is skipped where a size-limited tmpfs cannot be mounted (needs root)."""
    mounted = []

    def mount(size):
        mount_point = tmp_path / f"disk-{len(mounted)}-{size}"
        mount_point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                                capture_output=True)
        if result.returncode != 0:
            pytest.skip("cannot mount a size-limited tmpfs here (needs root)")
        mounted.append(mount_point)
        return mount_point

    yield mount
    for mount_point in mounted:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(small_disk, data_root):
    disk = small_disk("150m")  # room for one ResNet-18 checkpoint with optimizer state (89 MB), not two
    cfg = compose_cfg([*tiny_overrides(data_root, narrow=False), "schedule.runner.max_epochs=2"])
    with pytest.raises(CheckpointWriteError, match="epoch_2.pth failed .* previous checkpoint epoch_1.pth is intact"):
        run(cfg, disk / "run")
    work_dir = disk / "run/work_dir"
    weights = weights_fingerprint(cfg)
    assert resume_checkpoint("auto", work_dir, weights, 2) == work_dir / "epoch_1.pth"
    assert not list(work_dir.glob(".*.tmp")), "the half-written temp file must be removed"
    assert (work_dir / "latest.pth").resolve() == work_dir / "epoch_1.pth"


def test_a_full_disk_while_preparing_data_is_one_line(small_disk):
    disk = small_disk("2m")  # room for the config and a few small files, not for a dataset of 5,000 images
    result = run_cli(*tiny_overrides(disk / "data"), "data.num_train=5000", f"hydra.run.dir={disk / 'run'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("mmclf: error:")]
    assert "no space left on that volume" in line and str(disk / "data") in line


def test_stale_temp_files_in_the_data_folder_are_removed(tmp_path):
    cfg = compose_cfg(tiny_overrides(tmp_path / "data"))
    sources.prepare(cfg.data)
    folder = next((tmp_path / "data").glob("synthetic_*"))
    (folder / ".data_batch_1.x1y2z3.tmp").write_bytes(b"half a batch")
    sources.prepare(cfg.data)
    assert not list(folder.glob(".*.tmp"))

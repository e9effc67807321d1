"""Refusals: a run dir that must not be touched is refused in one line, touching nothing. A run dir that
another job holds is refused naming the holder (a lock left by a killed process does not block); a run
dir holding checkpoints of another recipe (even past max_epochs), or trained for more epochs than the
config asks, is refused with every file as it was; ``resume=`` from another recipe's checkpoint is
refused before anything is created."""
import os
import shutil
import signal
import subprocess
import sys

import pytest

from mmclf.errors import RunDirRefused
from mmclf.run.lock import refuse_if_busy, run_dir_lock
from mmclf.run.rundir import RunDir
from mmclf.task import run
from tests.conftest import REPO, compose_cfg, run_cli, tiny_overrides


def snapshot(folder) -> dict:
    """Every file's bytes, and where every symlink points; not the lock file, which names its last holder."""
    return {p: os.readlink(p) if p.is_symlink() else p.read_bytes() for p in folder.rglob("*")
            if not p.is_dir() and p.name != RunDir.LOCK}


def lock_holder(run_dir: RunDir) -> subprocess.Popen:
    """Another process holding ``run_dir``'s lock, as a running job does, once it says so."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom mmclf.run.lock import run_dir_lock\nfrom mmclf.run.rundir import RunDir\n"
        f"with run_dir_lock(RunDir({str(run_dir.path)!r})):\n    print('held', flush=True)\n    time.sleep(600)\n")],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_busy_run_dir_is_refused_naming_the_holder(tmp_path, data_root):
    run_dir = RunDir(tmp_path / "run")
    with run_dir_lock(run_dir):  # this test process holds it, as a running job would
        result = run_cli(*tiny_overrides(data_root), f"hydra.run.dir={run_dir}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "another mmclf job is running in this run dir" in line and f"pid {os.getpid()}" in line
    assert sorted(p.name for p in run_dir.path.iterdir()) == [".lock"], "Hydra wrote nothing into it"


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    holder = lock_holder(run_dir)
    with pytest.raises(RunDirRefused, match=f"pid {holder.pid} on host"):  # while it lives
        refuse_if_busy(run_dir)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    refuse_if_busy(run_dir)
    with run_dir_lock(run_dir):
        pass


@pytest.mark.parametrize("change", ["data.num_classes=5", "schedule.optimizer.lr=0.2", "seed=7",
                                    "model=resnet34_cifar"])
def test_checkpoints_of_another_recipe_are_refused_in_process_keeping_metrics_and_job_json(copy_of_finished_run,
                                                                                           data_root, change):
    job = (copy_of_finished_run / "job.json").read_bytes()
    # RunDirRefused is a ConfigError: the refusal of a run dir, not a config that cannot run.
    with pytest.raises(RunDirRefused, match="epoch_1.pth was trained with another model, data, schedule or seed"):
        run(compose_cfg([*tiny_overrides(data_root), change]), copy_of_finished_run)
    assert (copy_of_finished_run / "metrics.json").is_file(), "the earlier run's outputs stay"
    assert (copy_of_finished_run / "job.json").read_bytes() == job


def test_a_refused_rerun_touches_nothing_of_the_run_it_refuses(finished_run, tmp_path, data_root):
    run_dir = shutil.copytree(finished_run, tmp_path / "run", symlinks=True)
    before = snapshot(run_dir)
    result = run_cli(*tiny_overrides(data_root), "schedule.optimizer.lr=0.2", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2 and "was trained with another model, data, schedule or seed" in result.stderr
    after = snapshot(run_dir)
    assert after == before, "job.json, config.yaml, .hydra/ and the checkpoints stay as they were"


def test_resume_from_a_checkpoint_of_another_recipe_is_refused_up_front(finished_run, tmp_path, data_root):
    checkpoint = RunDir(finished_run).checkpoint(1)
    result = run_cli(*tiny_overrides(data_root), "model=resnet34_cifar", f"resume={checkpoint}",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"resume: {checkpoint} was trained with another model" in result.stderr
    assert not (tmp_path / "run").exists()


def test_another_recipe_past_max_epochs_is_refused_too(uninterrupted, tmp_path, data_root):
    loader, reference = uninterrupted
    run_dir = shutil.copytree(reference, tmp_path / "run", symlinks=True)
    cfg = compose_cfg([*tiny_overrides(data_root), f"data.loader={loader}", "seed=5"])  # 1 epoch, another seed
    before = snapshot(run_dir)
    with pytest.raises(RunDirRefused, match="epoch_2.pth was trained with another model, data, schedule or seed"):
        run(cfg, run_dir)
    assert snapshot(run_dir) == before


def test_fewer_epochs_than_the_run_dir_trained_are_refused_touching_nothing(copy_of_two_epoch_run, data_root):
    before = snapshot(copy_of_two_epoch_run.path)
    with pytest.raises(RunDirRefused) as refused:
        run(compose_cfg(tiny_overrides(data_root)), copy_of_two_epoch_run)  # max_epochs=1
    message = str(refused.value)
    assert "epoch_2.pth" in message and "schedule.runner.max_epochs=1" in message and "\n" not in message
    assert snapshot(copy_of_two_epoch_run.path) == before, "checkpoints, latest.pth and metrics stay as they were"

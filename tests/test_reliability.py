"""Reliability: a resumed run equals an uninterrupted one, one process per run dir,
leftovers of a kill cleaned, damaged final checkpoints recovered, refused re-runs touch nothing,
a full disk said in one line, and mmcls's own tools on every run's checkpoint."""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys

import mmcls
import pytest
import torch

from mmclf.checkpoints import epoch_checkpoints, record_hash, resume_checkpoint
from mmclf.config import weights_fingerprint
from mmclf.errors import RunDirRefused, StepError
from mmclf.lock import refuse_if_busy, run_dir_lock
from mmclf.rundir import RunDir
from mmclf.steps import test as test_module
from mmclf.task import run
from tests.conftest import REPO, compose_cfg, run_cli, tiny_overrides
from tests.test_end_to_end import assert_complete_run_dir

LOADERS = ["mmcls", "device"]


def two_epochs(data_root, loader):
    return compose_cfg([*tiny_overrides(data_root), "schedule.runner.max_epochs=2", f"data.loader={loader}"])


def weights(run_dir, epoch):
    return torch.load(RunDir(run_dir).checkpoint(epoch), map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(run_dir, reference, epoch=2):
    ours, theirs = weights(run_dir, epoch), weights(reference, epoch)
    assert ours.keys() == theirs.keys()
    different = [key for key in ours if not torch.equal(ours[key], theirs[key])]
    assert not different, f"resumed weights differ from the uninterrupted run's in {different[:3]}"


@pytest.fixture(scope="module", params=LOADERS)
def uninterrupted(request, tmp_path_factory, data_root):
    """(loader, run dir) of an uninterrupted two-epoch run."""
    run_dir = tmp_path_factory.mktemp(f"uninterrupted-{request.param}") / "run"
    run(two_epochs(data_root, request.param), run_dir)
    return request.param, run_dir


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


def test_a_busy_run_dir_is_refused_naming_the_holder(tmp_path, data_root):
    run_dir = RunDir(tmp_path / "run")
    with run_dir_lock(run_dir):  # this test process holds it, as a running job would
        result = run_cli(*tiny_overrides(data_root), f"hydra.run.dir={run_dir}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "another mmclf job is running in this run dir" in line and f"pid {os.getpid()}" in line
    assert sorted(p.name for p in run_dir.path.iterdir()) == [".lock"], "Hydra wrote nothing into it"


def lock_holder(run_dir: RunDir) -> subprocess.Popen:
    """Another process holding ``run_dir``'s lock, as a running job does, once it says so."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom mmclf.lock import run_dir_lock\nfrom mmclf.rundir import RunDir\n"
        f"with run_dir_lock(RunDir({str(run_dir.path)!r})):\n    print('held', flush=True)\n    time.sleep(600)\n")],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


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


def snapshot(folder) -> dict:
    """Every file's bytes, and where every symlink points; not the lock file, which names its last holder."""
    return {p: os.readlink(p) if p.is_symlink() else p.read_bytes() for p in folder.rglob("*")
            if not p.is_dir() and p.name != RunDir.LOCK}


def test_a_refused_rerun_touches_nothing_of_the_run_it_refuses(finished_run, tmp_path, data_root):
    run_dir = shutil.copytree(finished_run, tmp_path / "run", symlinks=True)
    before = snapshot(run_dir)
    result = run_cli(*tiny_overrides(data_root), "schedule.optimizer.lr=0.2", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2 and "was trained with another model, data, schedule or seed" in result.stderr
    after = snapshot(run_dir)
    assert after == before, "job.json, config.yaml, .hydra/ and the checkpoints stay as they were"


def test_a_refused_rerun_in_process_keeps_job_json(copy_of_finished_run, data_root):
    job = (copy_of_finished_run / "job.json").read_bytes()
    with pytest.raises(RunDirRefused):
        run(compose_cfg([*tiny_overrides(data_root), "seed=3"]), copy_of_finished_run)
    assert (copy_of_finished_run / "job.json").read_bytes() == job


def test_resume_from_a_checkpoint_of_another_recipe_is_refused_up_front(finished_run, tmp_path, data_root):
    checkpoint = RunDir(finished_run).checkpoint(1)
    result = run_cli(*tiny_overrides(data_root), "model=resnet34_cifar", f"resume={checkpoint}",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"resume: {checkpoint} was trained with another model" in result.stderr
    assert not (tmp_path / "run").exists()


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


def test_max_keep_ckpts_holds_after_a_kill_before_the_old_checkpoint_was_pruned(uninterrupted, tmp_path, data_root):
    loader, reference = uninterrupted
    run_dir = killed_copy(reference, tmp_path, keep_epochs=2)
    cfg = compose_cfg([*tiny_overrides(data_root), "schedule.runner.max_epochs=2", f"data.loader={loader}",
                       "runtime.checkpoint_config.max_keep_ckpts=1"])
    run(cfg, run_dir)
    assert [path.name for _, path in epoch_checkpoints(run_dir.work_dir)] == ["epoch_2.pth"]


def test_a_truncated_newest_checkpoint_is_skipped_for_the_previous(uninterrupted, tmp_path, data_root, caplog):
    loader, reference = uninterrupted
    work_dir = RunDir(shutil.copytree(reference, tmp_path / "run", symlinks=True)).work_dir
    newest = work_dir / "epoch_2.pth"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    weights = weights_fingerprint(two_epochs(data_root, loader))
    assert resume_checkpoint("auto", work_dir, weights, 2) == work_dir / "epoch_1.pth"
    assert "skipping damaged checkpoint" in caplog.text and "epoch_2.pth" in caplog.text
    assert resume_checkpoint("never", work_dir, weights, 2) is None


def test_another_recipe_past_max_epochs_is_refused_too(uninterrupted, tmp_path, data_root):
    loader, reference = uninterrupted
    run_dir = shutil.copytree(reference, tmp_path / "run", symlinks=True)
    cfg = compose_cfg([*tiny_overrides(data_root), f"data.loader={loader}", "seed=5"])  # 1 epoch, another seed
    before = snapshot(run_dir)
    with pytest.raises(RunDirRefused, match="epoch_2.pth was trained with another model, data, schedule or seed"):
        run(cfg, run_dir)
    assert snapshot(run_dir) == before


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


def test_stale_temp_files_in_the_data_folder_are_removed(tmp_path):
    from mmclf import data

    cfg = compose_cfg(tiny_overrides(tmp_path / "data"))
    data.prepare(cfg.data)
    folder = next((tmp_path / "data").glob("synthetic_*"))
    (folder / ".data_batch_1.x1y2z3.tmp").write_bytes(b"half a batch")
    data.prepare(cfg.data)
    assert not list(folder.glob(".*.tmp"))


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB tmpfs: room for the config and a few small files, not for a dataset of 5,000 images."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)]).returncode != 0:
        pytest.skip("cannot mount a size-limited tmpfs here (needs root)")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_while_preparing_data_is_one_line(tiny_disk):
    result = run_cli(*tiny_overrides(tiny_disk / "data"), "data.num_train=5000", f"hydra.run.dir={tiny_disk / 'run'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("mmclf: error:")]
    assert "no space left on that volume" in line and str(tiny_disk / "data") in line


MMCLS_TEST_TOOL = os.path.join(os.path.dirname(mmcls.__file__), ".mim", "tools", "test.py")  # as pip installs it


def mmcls_tools_top1(run_dir, epoch, cwd, out):
    result = subprocess.run([sys.executable, MMCLS_TEST_TOOL, str(RunDir(run_dir).mmcls_config),
                             str(RunDir(run_dir).checkpoint(epoch)), "--metrics", "accuracy", "--out", str(out),
                             "--device", "cpu"], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())["accuracy_top-1"]


@pytest.mark.slow
def test_mmcls_tools_evaluate_a_synthetic_run_to_the_same_top1(finished_run, tmp_path):
    expected = json.loads((finished_run / "eval_result.json").read_text())["accuracy_top-1"]
    assert mmcls_tools_top1(finished_run, 1, cwd=finished_run, out=tmp_path / "top1.json") == pytest.approx(expected)


@pytest.mark.slow
def test_mmcls_tools_evaluate_a_digits_run_to_the_same_top1(tmp_path, data_root):
    run_dir = tmp_path / "run"
    digits = [o.replace("data=synthetic", "data=digits") for o in tiny_overrides(data_root) if "data.num_" not in o]
    run(compose_cfg(digits), run_dir)
    expected = json.loads((run_dir / "eval_result.json").read_text())["accuracy_top-1"]
    assert mmcls_tools_top1(run_dir, 1, cwd=tmp_path, out=tmp_path / "top1.json") == pytest.approx(expected)

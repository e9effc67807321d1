"""Processes and files that must not outlive their command: more ranks than this machine has
devices, ranks orphaned by a killed torchrun, a run-dir lock kept by a killed job's DataLoader
workers, torchrun's and mmclf's temp folders."""
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mmclf.errors import ConfigError, RunDirRefused
from mmclf.run.lock import refuse_if_busy, run_dir_lock
from mmclf.run.rundir import RunDir
from mmclf.steps import launch
from mmclf.training import world
from tests.conftest import REPO, compose_cfg, run_cli, tiny_overrides
from tests.test_dist import prepared, wait_for, workers
from tests.test_refusals import lock_holder


def exited_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def kill_leftovers(folder) -> None:
    """SIGKILL what still runs with ``folder``, a test's own tmp path, on its command line: only that
    test's processes, checked now (a pid noted earlier may have been reused)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int(proc.name) != os.getpid() and \
                    str(folder).encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:  # gone meanwhile
            continue


def test_more_processes_than_cpus_are_refused_in_one_line_before_any_work(tmp_path, data_root):
    cpus = world.available_cpus()
    result = run_cli(*tiny_overrides(data_root), f"dist.nproc_per_node={cpus + 1}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"mmclf: error: dist.nproc_per_node={cpus + 1}: {cpus} CPU") and "Traceback" not in line
    assert not (tmp_path / "run").exists()


def test_more_processes_than_gpus_are_refused(monkeypatch, data_root):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    five = compose_cfg([*tiny_overrides(data_root), "device=auto", "dist.nproc_per_node=5"])
    with pytest.raises(ConfigError, match=r"^dist\.nproc_per_node=5: 4 GPU\(s\) visible here"):
        world.check_fits_here(five)
    world.check_fits_here(compose_cfg([*tiny_overrides(data_root), "device=auto", "dist.nproc_per_node=4"]))


def test_a_rank_whose_torchrun_died_before_it_started_exits_at_once():
    # torchrun killed while the rank starts: the rank already has another parent when it asks to die with it
    env = {**os.environ, "MMCLF_AGENT_PID": str(exited_pid()), "RANK": "0", "WORLD_SIZE": "2"}
    result = subprocess.run([sys.executable, "-m", "mmclf.steps", "train", "--run-dir", "run"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (1, "")


def test_ranks_die_with_torchrun_killed_while_they_start(tmp_path, data_root):
    cfg = compose_cfg([*tiny_overrides(data_root), "dist.nproc_per_node=2"])
    run_dir = prepared(cfg, tmp_path / "run")
    command = launch.torchrun_command(cfg, run_dir)
    torchrun = subprocess.Popen(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: workers(run_dir), "ranks started", timeout=120)
        torchrun.send_signal(signal.SIGKILL)  # as soon as seen: most often still starting Python
        torchrun.wait()
        wait_for(lambda: not workers(run_dir), "ranks alive after torchrun was killed", timeout=30)
    finally:
        torchrun.kill()
        kill_leftovers(tmp_path)


HOLD_WITH_LOADER_WORKERS = """
import sys, time
import torch
from torch.utils.data import DataLoader, Dataset
from mmclf.run.lock import run_dir_lock
from mmclf.run.rundir import RunDir

class Slow(Dataset):
    def __len__(self):
        return 1000

    def __getitem__(self, index):
        time.sleep(0.01)
        return index

with run_dir_lock(RunDir(sys.argv[1])):
    batches = iter(DataLoader(Slow(), num_workers=2))  # forked, as mmcls's loaders start them
    next(batches)
    print(*(worker.pid for worker in batches._workers), flush=True)
    time.sleep(600)
"""


def test_the_run_dir_lock_dies_with_its_job_not_with_its_loader_workers(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WITH_LOADER_WORKERS, str(run_dir)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    loader_workers = [int(pid) for pid in holder.stdout.readline().split()]
    try:
        assert len(loader_workers) == 2
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        refuse_if_busy(run_dir)  # at once: its workers, still alive for a few seconds, hold nothing
        with run_dir_lock(run_dir):
            pass
    finally:
        holder.kill()
        kill_leftovers(tmp_path)


def test_a_refusal_names_the_live_holder_not_the_pid_in_a_stale_record(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    holder = lock_holder(run_dir)
    try:
        dead, host = exited_pid(), json.loads(run_dir.lock.read_text())["host"]
        # what a holder that has not written its own record yet leaves there: its predecessor's
        run_dir.lock.write_text(json.dumps({"pid": dead, "host": host, "since": "2020-01-01T00:00:00"}))
        with pytest.raises(RunDirRefused, match=f"pid {holder.pid} on host") as refused:
            refuse_if_busy(run_dir)
        assert f"pid {dead} " not in str(refused.value)
    finally:
        holder.kill()
        holder.wait()


def test_a_process_cannot_take_or_test_its_own_run_dir_lock_again(tmp_path):
    # a record lock is dropped when its process closes any descriptor of the file: a second open must not happen
    run_dir = RunDir(tmp_path / "run")
    with run_dir_lock(run_dir):
        with pytest.raises(RunDirRefused, match="this process is running a job in this run dir already"):
            refuse_if_busy(run_dir)
        with pytest.raises(RunDirRefused, match="this process"), run_dir_lock(run_dir):
            pass
        elsewhere = subprocess.run([sys.executable, "-c", "from mmclf.run.lock import refuse_if_busy\n"
                                    f"from mmclf.run.rundir import RunDir\nrefuse_if_busy(RunDir({str(run_dir)!r}))"],
                                   cwd=REPO, capture_output=True, text=True, timeout=60)
        assert f"pid {os.getpid()} on host" in elsewhere.stderr, "still held"


def test_a_launch_leaves_no_temp_folders(monkeypatch, tmp_path, data_root):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    torchrun = launch.torchrun_command  # the same torchrun, with workers that fail at once
    monkeypatch.setattr(launch, "torchrun_command", lambda cfg, run_dir: [
        *torchrun(cfg, run_dir)[:3], "--standalone", "--nproc-per-node=2", "--no-python", "false"])
    cfg = compose_cfg([*tiny_overrides(data_root), "dist.nproc_per_node=2"])
    with pytest.raises(launch.DistributedTrainingFailed, match="torchrun ended with exit status 1"):
        launch.launch(cfg, prepared(cfg, tmp_path / "run"))
    assert list(temp.iterdir()) == [], "torchrun's log folder and mmclf's ranks folder are removed"


def test_a_terminated_launcher_leaves_no_ranks_and_no_temp_folders(tmp_path, data_root):
    temp, run_dir = tmp_path / "tmp", tmp_path / "run"
    temp.mkdir()
    launcher = subprocess.Popen([sys.executable, "-m", "mmclf", *tiny_overrides(data_root), "dist.nproc_per_node=2",
                                 f"hydra.run.dir={run_dir}"], cwd=REPO, env={**os.environ, "TMPDIR": str(temp)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(workers(run_dir)) == 2, "ranks started", timeout=120)
        launcher.send_signal(signal.SIGTERM)  # a scheduler's or a user's kill
        assert launcher.wait(timeout=60) != 0
        wait_for(lambda: not workers(run_dir), "ranks alive after their launcher was terminated", timeout=30)
        assert list(temp.iterdir()) == []
    finally:
        launcher.kill()
        kill_leftovers(tmp_path)


LAUNCH_IDLE_RANKS = """
import sys
from pathlib import Path

from mmclf.steps import launch
from tests.conftest import compose_cfg, tiny_overrides
from tests.test_dist import prepared

torchrun = launch.torchrun_command  # the same torchrun, with workers that wait
launch.torchrun_command = lambda cfg, run_dir: [*torchrun(cfg, run_dir)[:3], "--standalone", "--nproc-per-node=2",
                                                "--no-python", sys.executable, "-c", "import time; time.sleep(600)",
                                                str(run_dir)]
cfg = compose_cfg([*tiny_overrides(sys.argv[1]), "dist.nproc_per_node=2"])
launch.launch(cfg, prepared(cfg, Path(sys.argv[2])))
"""


def test_a_launcher_killed_outright_leaves_no_temp_folder(tmp_path, data_root):
    temp, run_dir = tmp_path / "tmp", tmp_path / "run"
    temp.mkdir()
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCH_IDLE_RANKS, str(data_root), str(run_dir)], cwd=REPO,
                                env={**os.environ, "TMPDIR": str(temp)}, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(workers(run_dir)) == 2, "ranks started", timeout=120)
        launcher.send_signal(signal.SIGKILL)  # no handler runs: torchrun, told by its parent-death signal, cleans
        launcher.wait()
        wait_for(lambda: not workers(run_dir) and not any(temp.iterdir()), "ranks or temp folder left", timeout=60)
    finally:
        launcher.kill()
        kill_leftovers(tmp_path)

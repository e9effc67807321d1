"""Data-parallel training through torchrun: two gloo processes on this CPU, end to end.

The reference recipe below converges on its synthetic data in 6 epochs (100% top-1 for seeds 0 and 1,
measured, on 1 process and on 2, 32 images a batch each). A 2-process run with the same
``data.samples_per_gpu`` takes half the optimizer steps of twice the size at the same learning rate
(mmclf leaves the learning-rate rule to the user); it must still converge: within 5 points (4 of
the 80 test images) of the 1-process run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmclf.errors import ConfigError, RunDirRefused
from mmclf.run.rundir import RunDir
from mmclf.steps import launch
from mmclf.steps.launch import DistributedTrainingFailed
from mmclf.steps.prepare_data import record_config
from mmclf.task import run
from mmclf.training import world
from tests.conftest import NARROW_MODEL, REPO, compose_cfg, run_cli
from tests.test_end_to_end import assert_complete_run_dir
from tests.test_resume import assert_same_weights
from tests.test_sweeps import summary_rows

EPOCHS = 6
# 640 learnable synthetic images, evaluated once at the end (mmcls's DistEvalHook pauses 2 s a time).
RECIPE = ["data=synthetic", "data.num_train=640", "data.num_test=80", "schedule=quick", "schedule.optimizer.lr=0.1",
          "device=cpu", "data.samples_per_gpu=32", f"schedule.runner.max_epochs={EPOCHS}",
          f"data.evaluation.interval={EPOCHS}", "runtime.log_config.interval=1",
          "runtime.checkpoint_config.max_keep_ckpts=-1", *NARROW_MODEL]
ACCURACY_TOLERANCE = 5.0


def overrides(data_root, *extra):
    return [*RECIPE, f"data.root={data_root}", *extra]


@pytest.fixture(scope="module")
def sweep_of_1_and_2_processes(tmp_path_factory, data_root):
    """A local sweep of the recipe on 1 and on 2 processes (mmcls's loader), reporting to TensorBoard
    and MLflow: each job distributed on its own. Its dir: job 0 trained on 1 process, job 1 on 2."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "sweep"
    uri = f"sqlite:///{sweep_dir.parent / 'mlflow.db'}"
    result = run_cli("-m", *overrides(data_root), "dist.nproc_per_node=1,2", "logger=many",
                     f"logger.mlflow.tracking_uri={uri}", f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


@pytest.fixture(scope="module")
def two_processes_device_loader(tmp_path_factory, data_root):
    """A 2-process run of the device loader through the local backend, in this process (torchrun's
    workers are its children)."""
    run_dir = tmp_path_factory.mktemp("two-processes-device") / "run"
    run(compose_cfg(overrides(data_root, "dist.nproc_per_node=2", "data.loader=device")), run_dir)
    return run_dir


def assert_trained_on_two_processes(run_dir):
    assert_complete_run_dir(run_dir, num_test=80)  # the 1-process test step loaded its checkpoint
    steps = json.loads((run_dir / "steps.json").read_text())
    assert steps["train"]["world_size"] == 2 and "world_size" not in steps["test"]
    work_dir = RunDir(run_dir).work_dir
    # Rank 0 alone writes: one text log, one json log, no leftovers of the ranks' gathered results.
    assert len(list(work_dir.glob("*.log"))) == 1 and len(list(work_dir.glob("*.log.json"))) == 1
    assert not (work_dir / ".eval_hook").exists()
    entries = [json.loads(line) for line in next(work_dir.glob("*.log.json")).read_text().splitlines()[1:]]
    train_iterations = [e for e in entries if e.get("mode") == "train" and e["epoch"] == 1]
    # 640 images less 64 held out for validation: each rank trains on half of 576, 32 a batch
    assert len(train_iterations) == 9, "each rank trains on 288 images, 32 a batch: 9 iterations"
    assert [e["epoch"] for e in entries if e.get("mode") == "val"] == [EPOCHS]  # (Dist)EvalHook ran


def test_a_sweep_runs_each_job_on_its_own_processes(sweep_of_1_and_2_processes):
    rows = summary_rows(sweep_of_1_and_2_processes)
    assert [r["status"] for r in rows] == ["succeeded", "succeeded"]
    assert_trained_on_two_processes(sweep_of_1_and_2_processes / "1")
    one = json.loads((sweep_of_1_and_2_processes / "0/steps.json").read_text())
    assert one["train"]["world_size"] == 1


def test_rank_0_alone_reports_to_tensorboard_and_mlflow(sweep_of_1_and_2_processes):
    from mlflow.tracking import MlflowClient

    two = sweep_of_1_and_2_processes / "1"
    assert len(list((two / "tensorboard").glob("events.out.tfevents.*"))) == 1
    client = MlflowClient(f"sqlite:///{sweep_of_1_and_2_processes.parent / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"mmclf-{sweep_of_1_and_2_processes.parent.name}-sweep")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}, "one MLflow run per job, not per rank"
    two_run = json.loads((two / "mlflow_run.json").read_text())["run_id"]
    assert client.get_metric_history(two_run, "train/loss"), "rank 0 logged the training curve"


def test_each_rank_gets_its_share_of_the_cores(monkeypatch, data_root, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(world, "CPU_QUOTA", Path("/nonexistent/cpu.max"))  # no cgroup limit
    assert launch._threads_per_process(compose_cfg(overrides(data_root, "dist.nproc_per_node=2"))) == 4
    assert launch._threads_per_process(compose_cfg(overrides(data_root, "dist.nproc_per_node=16"))) == 1
    monkeypatch.setattr(world, "CPU_QUOTA", tmp_path / "cpu.max")
    (tmp_path / "cpu.max").write_text("200000 100000\n")  # a pod's CPU limit of 2
    assert launch._threads_per_process(compose_cfg(overrides(data_root, "dist.nproc_per_node=2"))) == 1


def prepared(cfg, run_dir: Path) -> Path:
    """``run_dir`` with ``cfg`` recorded as prepare_data records it: what the torchrun ranks read."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record_config(cfg, RunDir(run_dir))
    return run_dir


def test_launch_gives_each_rank_its_threads_unless_they_are_set(monkeypatch, data_root, tmp_path):
    seen = []
    monkeypatch.setattr(launch.subprocess, "run", lambda command, env, preexec_fn: seen.append(env) or
                        subprocess.CompletedProcess(command, 0))
    monkeypatch.setattr(world, "available_cpus", lambda: 8)
    cfg = compose_cfg(overrides(data_root, "dist.nproc_per_node=2"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    launch.launch(cfg, prepared(cfg, tmp_path / "run"))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    launch.launch(cfg, tmp_path / "run")
    assert [env["OMP_NUM_THREADS"] for env in seen] == ["4", "3"]


def test_auto_is_one_process_per_visible_gpu(monkeypatch, data_root):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert world.processes_per_node(compose_cfg(overrides(data_root, "device=auto"))) == 4
    assert world.processes_per_node(compose_cfg(overrides(data_root, "device=cpu"))) == 1  # CPU: one, unless told


def test_two_processes_reach_the_accuracy_of_one(sweep_of_1_and_2_processes):
    one, two = (json.loads((sweep_of_1_and_2_processes / f"{job}/metrics.json").read_text())["test_accuracy_top-1"]
                for job in (0, 1))
    assert one >= 90.0, f"the reference itself did not learn ({one}%)"
    assert two >= one - ACCURACY_TOLERANCE, f"2 processes: {two}%, 1 process: {one}%"


def test_the_device_loader_trains_on_two_processes(two_processes_device_loader):
    assert_trained_on_two_processes(two_processes_device_loader)
    accuracy = json.loads((two_processes_device_loader / "metrics.json").read_text())["test_accuracy_top-1"]
    assert accuracy >= 90.0


def test_a_run_dir_trained_on_2_processes_is_not_resumed_on_1(two_processes_device_loader, data_root):
    from mmclf.rundir_checks import refuse_foreign_run

    one_process = compose_cfg(overrides(data_root, "dist.nproc_per_node=1", "data.loader=device"))
    # mmcv counts iterations: on 1 process an epoch is twice as many, and iteration-based schedules
    # (warmup, one-cycle) would run off their ends.
    with pytest.raises(RunDirRefused, match=r"trained on 2 process\(es\), this run has 1.*resume=never"):
        refuse_foreign_run(one_process, RunDir(two_processes_device_loader))
    refuse_foreign_run(compose_cfg(overrides(data_root, "dist.nproc_per_node=2", "data.loader=device")),
                       RunDir(two_processes_device_loader))  # the same world size resumes


def test_the_device_loader_shares_each_epoch_out_between_ranks():
    import torch

    from mmclf.training.fast.device_loader import shard

    order = torch.randperm(11)
    shares = [shard(order, rank, 3) for rank in range(3)]
    assert [len(share) for share in shares] == [4, 4, 4]  # equal: every rank runs as many iterations
    assert set(torch.cat(shares).tolist()) == set(order.tolist())  # every image, one wrapped round


def workers(run_dir) -> dict[int, int]:
    """{rank: pid} of the running torchrun workers of ``run_dir``."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        rank = [int(v[5:]) for v in environ if v.startswith(b"RANK=")]  # torchrun's agent has none
        if rank and str(run_dir).encode() in cmdline:
            found[rank[0]] = int(proc.name)
    return found


def wait_for(condition, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_launcher_takes_its_ranks_with_it_and_the_same_command_resumes(tmp_path, data_root,
                                                                               two_processes_device_loader):
    run_dir = tmp_path / "run"
    # Neither validated nor exported: neither touches the weights, which are what is compared.
    args = overrides(data_root, "dist.nproc_per_node=2", "data.loader=device", "data.evaluation.interval=0",
                     "runtime.export.onnx=false")
    launcher = subprocess.Popen([sys.executable, "-m", "mmclf", *args, f"hydra.run.dir={run_dir}"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (run_dir / "work_dir/epoch_1.pth").exists(), "epoch 1's checkpoint")
    assert len(workers(run_dir)) == 2
    launcher.send_signal(signal.SIGKILL)  # as the kernel's OOM killer would: no handler runs
    launcher.wait()
    # Its ranks die with it: none trains on, writing checkpoints behind the next command's back.
    wait_for(lambda: not workers(run_dir), "ranks still running after their launcher was killed", timeout=30)
    assert not (run_dir / "metrics.json").exists()

    run(compose_cfg(args), run_dir)  # the same command, again
    logs = sorted(RunDir(run_dir).work_dir.glob("*.log.json"))
    resumed = [json.loads(line) for line in logs[-1].read_text().splitlines()[1:]]
    assert len(logs) == 2 and resumed[0]["epoch"] > 1, "the second run must resume, not start over"
    assert json.loads((run_dir / "steps.json").read_text())["train"]["world_size"] == 2
    # Each rank's draws come from (seed, epoch, rank) and gloo's sums are exact: bit-identical.
    assert_same_weights(run_dir, two_processes_device_loader, epoch=EPOCHS)


def test_a_rank_that_cannot_join_ends_the_train_step_in_one_line(tmp_path, data_root):
    cfg = compose_cfg(overrides(data_root, "dist.nproc_per_node=2"))
    cfg.device = "cuda"  # past validation: each rank fails joining its (absent) GPU
    with pytest.raises(DistributedTrainingFailed) as failed:
        launch.launch(cfg, prepared(cfg, tmp_path / "run"))
    assert str(failed.value).startswith("train: torchrun ended with exit status 1: a rank crashed")
    assert "run the same command again to resume" in str(failed.value) and "\n" not in str(failed.value)


def test_a_ranks_own_error_is_the_train_steps_one_line(tmp_path, data_root):
    cfg = compose_cfg(overrides(data_root, "dist.nproc_per_node=2", "schedule.optimizer.lr=1e30",
                                "schedule.runner.max_epochs=1"))
    with pytest.raises(DistributedTrainingFailed, match=r"^train: rank 0: training loss became (nan|inf)") as failed:
        run(cfg, tmp_path / "run")
    assert "lower schedule.optimizer.lr" in str(failed.value)
    assert json.loads((tmp_path / "run/job.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("override, key", [
    ("dist.nproc_per_node=0", "dist.nproc_per_node"),
    ("dist.nproc_per_node=many", "dist.nproc_per_node"),
    ("dist.nnodes=0", "dist.nnodes"),
    ("dist.nnodes=2", "dist.nnodes"),  # this backend trains on one machine
])
def test_bad_dist_values_are_refused_in_one_line_before_any_work(override, key, tmp_path, data_root):
    result = run_cli(*overrides(data_root, override), f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and key in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "run").exists()


def test_several_nodes_need_a_rendezvous(data_root, monkeypatch):
    monkeypatch.delenv("PET_MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="TrainJob"):
        launch.torchrun_command(compose_cfg(overrides(data_root, "dist.nnodes=2")), "run")
    monkeypatch.setenv("PET_MASTER_ADDR", "trainjob-node-0-0.trainjob")
    command = launch.torchrun_command(compose_cfg(overrides(data_root, "dist.nnodes=2")), "run")
    # node rank and master come from Kubeflow Trainer's PET_* variables, which torchrun reads itself
    assert "--nnodes=2" in command and "--standalone" not in command and not any("node-rank" in a for a in command)
    assert os.environ["PET_MASTER_ADDR"] not in command

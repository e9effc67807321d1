"""Hydra multirun on both backends: grids, an Optuna search, KFP submit sweeps, summaries,
re-runs that skip finished jobs, and a failing job in the middle of a sweep."""
import csv
import json
import math
import shutil

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import closed_port_url, run_cli, tiny_overrides
from tests.kfp_server import FakeKfpServer

LRS, MODELS = ("0.1", "0.05"), ("resnet18_cifar", "resnet34_cifar")
GRID = [f"schedule.optimizer.lr={','.join(LRS)}", f"model={','.join(MODELS)}"]


def summary_rows(sweep_dir):
    with open(sweep_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_grid_summary(sweep_dir, result, models=MODELS):
    assert result.returncode == 0, result.stderr[-3000:]
    rows = summary_rows(sweep_dir)
    assert len(rows) == len(LRS) * len(models) and {r["status"] for r in rows} == {"succeeded"}
    assert {(r["schedule.optimizer.lr"], r.get("model", models[0])) for r in rows} == {
        (lr, m) for lr in LRS for m in models}
    for row in rows:
        metrics = json.loads((sweep_dir / row["job"] / "metrics.json").read_text())
        assert float(row["objective"]) == pytest.approx(metrics["val_accuracy_top-1"])
        assert row["run_dir"] == str(sweep_dir / row["job"])
    assert (sweep_dir / "summary.png").stat().st_size > 0
    swept = " | model" if len(models) > 1 else ""
    assert f"| job | status{swept} | schedule.optimizer.lr | objective" in (sweep_dir / "summary.md").read_text()


@pytest.mark.slow
def test_local_grid_then_rerun_skips_finished_jobs(tmp_path, data_root):
    sweep_dir = tmp_path / "sweep"
    # No ONNX export: a second a job, and nothing here reads the model (test_export.py does).
    args = ["-m", *tiny_overrides(data_root), *GRID, "runtime.export.onnx=false", f"hydra.sweep.dir={sweep_dir}"]
    first = run_cli(*args)
    assert_grid_summary(sweep_dir, first)
    progress = [line for line in first.stdout.splitlines() if line.startswith("sweep: job")]
    assert [line.split(" (")[0] for line in progress] == [f"sweep: job {k}/4" for k in (1, 2, 3, 4)]
    assert all("succeeded, objective" in line and ", best " in line and "s elapsed" in line for line in progress)
    stamps = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/metrics.json")}

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already holds a finished run of this config") == 4
    assert {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/metrics.json")} == stamps


@pytest.mark.slow
def test_a_sweep_job_refused_by_its_dir_is_shown_as_refused(tmp_path, data_root, finished_run):
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(finished_run, sweep_dir / "0", symlinks=True)  # job 0's dir holds a seed-0 run
    job = (sweep_dir / "0/job.json").read_bytes()
    result = run_cli("-m", *tiny_overrides(data_root), "seed=7", f"hydra.sweep.dir={sweep_dir}")
    assert "was trained with another model, data, schedule or seed" in result.stdout + result.stderr
    (row,) = summary_rows(sweep_dir)
    assert row["status"] == "refused" and row["objective"] == ""
    assert (sweep_dir / "0/job.json").read_bytes() == job, "the run it refused keeps its record"
    assert result.returncode == 1, "a sweep with no job done fails"


@pytest.mark.slow
def test_fail_fast_stops_the_sweep(tmp_path, data_root):
    sweep_dir = tmp_path / "sweep"
    result = run_cli("-m", *tiny_overrides(data_root), "schedule.optimizer.lr=1e30,0.1", "sweep.fail_fast=true",
                     f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 1, "a failure, not a refusal: the job started"
    assert "training loss became" in result.stderr and "Traceback" not in result.stderr
    assert not (sweep_dir / "1").exists(), "the job after the failure must not run"
    assert [r["status"] for r in summary_rows(sweep_dir)] == ["failed"], "the summary is written all the same"


@pytest.mark.slow
def test_optuna_search_of_two_trials(tmp_path, data_root):
    sweep_dir = tmp_path / "sweep"
    # tiny_overrides' schedule.runner.max_epochs=1 on the command line replaces the search over epochs
    result = run_cli("-m", *tiny_overrides(data_root), "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                     "runtime.export.onnx=false", f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = summary_rows(sweep_dir)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"succeeded"}
    objectives = [float(r["objective"]) for r in rows]
    assert all(0 <= o <= 100 for o in objectives)
    assert len({r["schedule.optimizer.lr"] for r in rows}) == 2, "TPE samples a new learning rate per trial"
    configs = [yaml.safe_load((sweep_dir / r["job"] / "config.yaml").read_text()) for r in rows]
    assert {c["schedule"]["runner"]["max_epochs"] for c in configs} == {1}
    assert {c["data"]["samples_per_gpu"] for c in configs} <= {32, 64, 128}
    best = (sweep_dir / "summary.md").read_text()
    assert f"objective {max(objectives)}" in best, "the best trial is the best objective of the jobs"


@pytest.mark.parametrize("mode", ["backend.mode=submit", "backend.mode=compile"])
def test_optuna_without_an_objective_coming_back_is_refused(tmp_path, mode):
    result = run_cli("hparams_search=optuna", "backend=kfp", mode, f"backend.host={closed_port_url()}",
                     "backend.volume.storage_class=nfs-client",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 2 and "hparams_search needs each trial's objective" in result.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_kfp_submit_sweep_creates_one_run_per_job_in_one_experiment(tmp_path, data_root):
    sweep_dir = tmp_path / "2026-11-29" / "10-00-00"
    env = {"HOME": str(tmp_path)}  # kfp.Client keeps a context file under ~/.config/kfp
    with FakeKfpServer() as server:
        result = run_cli("-m", *tiny_overrides(data_root), "backend=kfp", "backend.mode=submit",
                         "backend.volume.storage_class=nfs-client",
                         f"backend.host={server.url}", "schedule.optimizer.lr=0.1,0.05,0.02",
                         f"hydra.sweep.dir={sweep_dir}", env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        experiments = server.requests_to("POST", "/apis/v2beta1/experiments")
        runs = server.requests_to("POST", "/apis/v2beta1/runs")
    assert [e.body["display_name"] for e in experiments] == ["mmclf-2026-11-29-10-00-00"]
    assert len(runs) == 3 and len({r.body["experiment_id"] for r in runs}) == 1
    names = sorted(r.body["display_name"] for r in runs)
    assert all("schedule.optimizer.lr=" in name for name in names)
    rows = summary_rows(sweep_dir)
    assert [r["status"] for r in rows] == ["kfp submitted"] * 3
    assert all(r["kfp_run_id"] and r["kfp_url"].startswith(server.url) for r in rows)
    assert all(math.isnan(float(r["objective"] or "nan")) for r in rows), "no objective without waiting"


@pytest.mark.slow
def test_parallel_jobs_train_with_dataloader_workers_into_one_fresh_mlflow_store_and_a_failing_job_is_recorded(
        tmp_path, data_root):
    # Hydra's joblib launcher (loky processes): DataLoader workers start inside them, on both loaders, and
    # two jobs at once open one MLflow SQLite store that does not exist yet. lr=1e30 diverges.
    sweep_dir, uri = tmp_path / "sweep", f"sqlite:///{tmp_path / 'fresh.db'}"
    result = run_cli("-m", *tiny_overrides(data_root), "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     "data.loader=mmcls,device", "schedule.optimizer.lr=1e30,0.05", "data.workers_per_gpu=1",
                     "runtime.export.onnx=false", "logger=mlflow", f"logger.mlflow.tracking_uri={uri}",
                     f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = summary_rows(sweep_dir)
    assert sorted((r["data.loader"], r["schedule.optimizer.lr"], r["status"]) for r in rows) == [
        (loader, lr, status) for loader in ("device", "mmcls") for lr, status in (("0.05", "succeeded"),
                                                                                  ("1e+30", "failed"))]
    for row in rows:
        record = json.loads((sweep_dir / row["job"] / "job.json").read_text())
        assert record["status"] == row["status"]
        if row["status"] == "failed":
            assert "TrainingDiverged: training loss became" in row["error"]
    assert result.stdout.count("sweep: job ") == 4  # (other jobs' progress bars may share its line)
    # One MLflow experiment for the sweep, named after its dir, with a run per job; a failed job's
    # run is closed as FAILED and does not block the next job's in the same process.
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(f"mmclf-{tmp_path.name}-sweep").experiment_id])
    assert sorted((r.data.params["data.loader"], r.data.params["schedule.optimizer.lr"], r.info.status)
                  for r in runs) == [(loader, lr, status) for loader in ("device", "mmcls")
                                     for lr, status in (("0.05", "FINISHED"), ("1e+30", "FAILED"))]
    assert all("val_accuracy_top-1" in r.data.metrics for r in runs if r.info.status == "FINISHED")


def test_each_parallel_job_claims_a_gpu_of_its_own_by_number_and_frees_it(tmp_path, monkeypatch):
    from mmclf.errors import ConfigError, StepFailed
    from mmclf.run.sweep_gpus import check_parallel_jobs, claim, one_gpu_for
    from mmclf.training import world
    from tests.conftest import compose_cfg

    held = {number: claim(tmp_path, number, gpus=2) for number in (1, 2)}  # job 2 finds GPU 0 free
    assert {number: index for number, (index, _) in held.items()} == {1: 1, 2: 0}
    with pytest.raises(StepFailed, match="all 2 GPUs are held"):
        claim(tmp_path, 3, gpus=2)
    held[1][1].close()  # job 1 ends: job 3 gets its GPU
    assert claim(tmp_path, 3, gpus=2)[0] == 1
    monkeypatch.setattr("mmclf.models.config.resolve_device", lambda device: "cuda")
    with one_gpu_for(tmp_path / "other-sweep", 5, gpus=4) as gpu:
        assert gpu == 1 and world.processes_per_node(compose_cfg()) == 1  # nproc_per_node=auto: its one GPU
    with pytest.raises(ConfigError, match=r"hydra.launcher.n_jobs=3: 2 GPU\(s\) visible here"):
        check_parallel_jobs(3, gpus=2)


def test_an_unexpected_failure_is_one_line_in_the_sweep_and_its_traceback_in_the_jobs_log(tmp_path, monkeypatch,
                                                                                         caplog):
    import logging

    from mmclf import task
    from mmclf.reports.jobs import JobContext
    from tests.conftest import compose_cfg

    def broken(cfg, run_dir, job, validated=False):
        raise RuntimeError("a bug")

    monkeypatch.setattr(task, "run", broken)
    job_log = logging.FileHandler(tmp_path / "mmclf.log")
    logging.getLogger().addHandler(job_log)
    try:
        objective = task.run_job(compose_cfg(), tmp_path / "0", JobContext(number=0, sweep_dir=tmp_path))
    finally:
        logging.getLogger().removeHandler(job_log)
        job_log.close()
    assert math.isnan(objective)
    [line] = [r.getMessage() for r in caplog.records if "failed and the sweep goes on" in r.getMessage()]
    assert line.endswith(f"a bug (traceback in {tmp_path / 'mmclf.log'})")
    assert "Traceback (most recent call last)" in (tmp_path / "mmclf.log").read_text()
    assert not any(r.exc_info for r in caplog.records), "no traceback beside the one line"

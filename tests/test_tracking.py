"""Watching runs: per-epoch validation in mmcv's log, TensorBoard event files, an MLflow run per
mmclf run (read back with TensorBoard's and MLflow's own readers), and a sweep's progress lines."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mmclf.reports.jobs import JobContext
from mmclf.reports.report import read_log
from mmclf.reports.tracking import end_recorded_run, open_run, tracking_uri
from mmclf.run.rundir import RunDir
from mmclf.summary import SummarizeSweep
from mmclf.task import run
from tests.conftest import compose_cfg, tiny_overrides


def test_every_epoch_is_validated_and_logged_as_mmcv_writes_it(finished_run):
    (val,) = read_log(RunDir(finished_run).work_dir, "val")
    val_result = json.loads((finished_run / "val_result.json").read_text())
    assert val["epoch"] == 1 and val["accuracy_top-1"] == pytest.approx(val_result["accuracy_top-1"]), \
        "epoch 1's validation is the test step's evaluation of the validation split with the same weights"


def test_evaluation_interval_0_switches_validation_off(tmp_path, data_root):
    run(compose_cfg([*tiny_overrides(data_root), "data.evaluation.interval=0"]), tmp_path / "run")
    assert read_log(RunDir(tmp_path / "run").work_dir, "val") == []
    assert read_log(RunDir(tmp_path / "run").work_dir, "train"), "training is logged all the same"


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, data_root):
    """A two-epoch run with logger=many: TensorBoard files in the run dir, MLflow in a temp SQLite store."""
    root = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = compose_cfg([*tiny_overrides(data_root), "schedule.runner.max_epochs=2", "logger=many",
                       f"logger.mlflow.tracking_uri={uri}"])
    run(cfg, root / "run")
    return RunDir(root / "run"), uri


def test_tensorboard_reads_the_event_files(tracked_run):
    run_dir, _ = tracked_run
    events = EventAccumulator(str(run_dir / RunDir.TENSORBOARD))
    events.Reload()
    assert {"train/loss", "learning_rate", "val/accuracy_top-1", "val/accuracy_top-5"} <= set(events.Tags()["scalars"])
    val = [point.value for point in events.Scalars("val/accuracy_top-1")]
    # mmcv's json log rounds to 5 decimals
    assert val == pytest.approx([entry["accuracy_top-1"] for entry in read_log(run_dir.work_dir, "val")], abs=1e-5)


def test_mlflow_holds_one_run_with_params_history_metrics_and_artifacts(tracked_run):
    run_dir, uri = tracked_run
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mmclf")
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.run_id == json.loads(run_dir.mlflow_run.read_text())["run_id"]
    assert mlflow_run.info.status == "FINISHED"
    params = mlflow_run.data.params
    assert params["schedule.runner.max_epochs"] == "2" and params["data.name"] == "synthetic"
    history = client.get_metric_history(mlflow_run.info.run_id, "val/accuracy_top-1")
    logged = [e["accuracy_top-1"] for e in read_log(run_dir.work_dir, "val")]
    assert [point.value for point in history] == pytest.approx(logged, abs=1e-5)
    assert len(client.get_metric_history(mlflow_run.info.run_id, "train/loss")) >= 2
    metrics = json.loads(run_dir.metrics.read_text())
    assert mlflow_run.data.metrics["val_accuracy_top-1"] == pytest.approx(metrics["val_accuracy_top-1"])
    artifacts = {artifact.path for artifact in client.list_artifacts(mlflow_run.info.run_id)}
    assert {"confusion_matrix.png", "training_curve.png", "report.md", "metrics.json"} <= artifacts


def test_a_resumed_run_reports_to_the_same_mlflow_run(tracked_run):
    run_dir, uri = tracked_run
    recorded = json.loads(run_dir.mlflow_run.read_text())
    config = {"logger": {"mlflow": {"tracking_uri": uri, "experiment": "mmclf"}}}
    mlflow = open_run(run_dir, config)  # what the train step of a resumed run does
    try:
        assert mlflow.active_run().info.run_id == recorded["run_id"]
    finally:
        mlflow.end_run()
    assert json.loads(run_dir.mlflow_run.read_text()) == recorded


def test_the_store_defaults_to_the_environment_then_a_sqlite_file(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri({"tracking_uri": None}) == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking_uri({"tracking_uri": None}) == "http://mlflow.example:5000"
    assert tracking_uri({"tracking_uri": "sqlite:////srv/m.db"}) == "sqlite:////srv/m.db"


def test_the_default_store_keeps_its_artifacts_beside_the_database(tracked_run):
    _, uri = tracked_run
    experiment = MlflowClient(uri).get_experiment_by_name("mmclf")
    assert experiment.artifact_location == (Path(uri.removeprefix("sqlite:///")).parent / "mlflow-artifacts").as_uri()


def test_the_experiment_is_named_after_the_sweep_unless_configured(tmp_path, data_root):
    sweep = JobContext(number=0, sweep_dir=Path("multirun/2026-11-29/10-00-00"))
    assert (JobContext().experiment, sweep.experiment) == ("mmclf", "mmclf-2026-11-29-10-00-00")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [*tiny_overrides(data_root), "logger=mlflow", f"logger.mlflow.tracking_uri={uri}"]
    run(compose_cfg([*overrides, "logger.mlflow.experiment=mine"]), tmp_path / "run", sweep)
    assert MlflowClient(uri).get_experiment_by_name("mine") is not None


def test_a_sweep_whose_jobs_all_fail_exits_non_zero(tmp_path, capsys):
    for job in ("0", "1"):  # what two failed jobs leave in a sweep dir
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra/overrides.yaml").write_text(f"- seed={job}\n")
        (tmp_path / job / "job.json").write_text(json.dumps({"status": "failed", "error": "TrainingDiverged: nan"}))
    sweep = compose_cfg(return_hydra_config=True, overrides=[f"hydra.sweep.dir={tmp_path}"])
    with pytest.raises(SystemExit) as exit_info:
        SummarizeSweep().on_multirun_end(sweep)
    assert exit_info.value.code == 1 and "every job of the sweep failed" in capsys.readouterr().err
    (tmp_path / "1/job.json").write_text(json.dumps({"status": "succeeded", "objective": 50.0}))
    SummarizeSweep().on_multirun_end(sweep)  # one success: the sweep succeeds


def test_a_killed_ranks_mlflow_run_is_ended_failed_by_its_launcher(tmp_path, data_root):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_cfg([*tiny_overrides(data_root), "logger=mlflow", f"logger.mlflow.tracking_uri={uri}",
                       "logger.mlflow.experiment=mmclf"])
    run_dir = RunDir(tmp_path / "run")
    run_dir.path.mkdir()
    # rank 0 opens the run dir's MLflow run, then torchrun ends it (another rank failed): nothing ends the run
    config = {"logger": {"mlflow": {"tracking_uri": uri, "experiment": "mmclf"}}}
    opened = subprocess.run([sys.executable, "-c", (
        "import os, signal\nfrom mmclf.run.rundir import RunDir\nfrom mmclf.reports.tracking import open_run\n"
        f"open_run(RunDir({str(run_dir.path)!r}), {config!r})\nos.kill(os.getpid(), signal.SIGKILL)\n")])
    assert opened.returncode == -9
    run_id = json.loads(run_dir.mlflow_run.read_text())["run_id"]
    assert MlflowClient(uri).get_run(run_id).info.status == "RUNNING"
    end_recorded_run(cfg, run_dir, "FAILED")  # what the launcher does when torchrun fails
    assert MlflowClient(uri).get_run(run_id).info.status == "FAILED"

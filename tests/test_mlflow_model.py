"""logger=mlflow: the exported model as an MLflow model of the ONNX flavour, registered on the release gate
(min_metric), loadable by name with mlflow.pyfunc and giving the run's own answers. Real MLflow, on a
SQLite store in the test's folder (the embedded default)."""
import json
import logging

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mmclf.errors import ConfigError
from mmclf.run.rundir import RunDir
from mmclf.steps import export
from mmclf.task import run
from tests.conftest import compose_cfg, digits_overrides, tiny_overrides

NAME = "digits"


def digits_run(data_root, store, *extra):
    """One epoch of the narrow ResNet-18 on scikit-learn's digits, reporting to ``store``."""
    # No DataLoader workers: their start costs more than these images take, and nothing here is about them.
    return compose_cfg([*digits_overrides(data_root), "data.workers_per_gpu=0", "logger=mlflow",
                        f"logger.mlflow.tracking_uri={store}", *extra])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def registered(tmp_path_factory, data_root, store):
    """A digits run above the gate (min_metric=0), with its config."""
    run_dir = tmp_path_factory.mktemp("registered") / "run"
    cfg = digits_run(data_root, store, f"logger.mlflow.registered_model={NAME}", "min_metric=0")
    run(cfg, run_dir)
    return cfg, RunDir(run_dir)


def test_the_registered_model_loads_by_name_and_gives_the_runs_answers(registered, store):
    import mlflow

    cfg, run_dir = registered
    (version,) = MlflowClient(store).search_model_versions(f"name='{NAME}'")
    metrics = json.loads(run_dir.metrics.read_text())
    assert version.tags["mmclf.run_dir"] == str(run_dir.path.resolve())
    assert version.tags["test_accuracy_top-1"] == f"{metrics['test_accuracy_top-1']:.2f}"
    assert version.tags["val_accuracy_top-1"] == f"{metrics['val_accuracy_top-1']:.2f}"
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/{version.version}")
    (images,), (scores,) = model.metadata.get_input_schema().inputs, model.metadata.get_output_schema().inputs
    assert (images.name, images.type, images.shape) == ("images", np.dtype(np.uint8), (-1, 16, 16, 3))
    assert (scores.name, scores.type, scores.shape) == ("scores", np.dtype(np.float32), (-1, 10))
    test_images, _ = export.test_split(cfg, run_dir)
    top1 = model.predict({"images": np.stack(test_images)})["scores"].argmax(axis=1)
    predictions = json.loads(run_dir.predictions.read_text())["pred_label"]  # PyTorch's, from the test step
    agreement = json.loads(run_dir.export_result.read_text())["onnx_top1_agreement"]  # measured at export
    assert 100.0 * np.mean(top1 == np.array(predictions)) == pytest.approx(agreement)
    local = mlflow.artifacts.download_artifacts(f"models:/{NAME}/{version.version}")
    assert (run_dir.path / "labels.txt").read_text() == open(f"{local}/extra_files/labels.txt").read()


def test_a_rerun_registers_no_second_version(registered, store):
    cfg, run_dir = registered
    run(cfg, run_dir.path)  # finished: every step skipped
    run_dir.metrics.unlink()  # the metrics step again, as after a failure past registering
    run(cfg, run_dir.path)
    assert len(MlflowClient(store).search_model_versions(f"name='{NAME}'")) == 1


def test_a_run_below_the_gate_logs_its_model_but_registers_none(tmp_path, data_root, store, caplog):
    caplog.set_level(logging.INFO)
    cfg = compose_cfg([*tiny_overrides(data_root), "logger=mlflow", f"logger.mlflow.tracking_uri={store}",
                       "logger.mlflow.registered_model=gated", "min_metric=100"])
    run(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["val_accuracy_top-1"] < 100
    assert MlflowClient(store).search_registered_models("name='gated'") == []
    assert any("is below min_metric=100.0: not registered as gated" in r.getMessage() for r in caplog.records)
    record = json.loads((tmp_path / "run" / "mlflow_run.json").read_text())
    assert MlflowClient(store).get_logged_model(record["model_id"]).name == "model", "logged all the same"


@pytest.mark.parametrize("overrides, message", [
    (["logger.mlflow.registered_model='a/b'"], r"^logger\.mlflow\.registered_model='a/b': MLflow's registry refuses"),
    (["logger.mlflow.registered_model=x", "runtime.export.onnx=false"], r"runtime\.export\.onnx=false: the registry"),
    (["min_metric=120"], r"^min_metric=120\.0: val_accuracy_top-1 is a percentage"),
])
def test_bad_registration_values_are_refused_before_any_work(tmp_path, data_root, store, overrides, message):
    with pytest.raises(ConfigError, match=message) as refused:
        run(digits_run(data_root, store, *overrides), tmp_path / "run")
    assert "\n" not in str(refused.value)
    assert [path.name for path in (tmp_path / "run").iterdir()] == ["job.json"], "the refusal recorded, nothing run"

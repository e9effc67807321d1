"""train -> test -> export -> metrics on tiny synthetic data: in process, and through `python -m mmclf`."""
import json

import mmcv
import pytest

from mmclf.task import run
from tests.conftest import compose_cfg, run_cli, tiny_overrides

RUN_FILES = ["config.yaml", "eval_result.json", "val_result.json", "predictions.json", "model.onnx", "labels.txt",
             "smoke_test.npz", "export.json", "metrics.json", "report.md", "confusion_matrix.png", "training_curve.png",
             "work_dir/epoch_1.pth", "work_dir/latest.pth", "work_dir/mmcls_config.py"]
SCALARS = [f"{split}_{name}" for split in ("val", "test")
           for name in ("accuracy_top-1", "accuracy_top-5", "precision", "recall", "f1_score")]


def assert_complete_run_dir(run_dir, num_test):
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), f"{name} missing from the run dir"
    assert list((run_dir / "work_dir").glob("*.log")) and list((run_dir / "work_dir").glob("*.log.json"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in SCALARS:
        assert 0.0 <= metrics[key] <= 100.0, f"{key} is not a percentage: {metrics[key]}"
    assert metrics["num_test_images"] == num_test
    classes = metrics["confusion_matrix"]["classes"]
    matrix = metrics["confusion_matrix"]["matrix"]
    assert len(matrix) == len(classes) == len(metrics["per_class_accuracy"])
    assert sum(map(sum, matrix)) == num_test
    correct = sum(matrix[i][i] for i in range(len(classes)))
    assert metrics["test_accuracy_top-1"] == pytest.approx(100.0 * correct / num_test, abs=1e-6)
    for split, name in (("test", "eval_result.json"), ("val", "val_result.json")):
        result = json.loads((run_dir / name).read_text())
        assert {key: metrics[f"{split}_{key}"] for key in result} == result
    return metrics


def test_in_process_run_writes_the_whole_run_dir(finished_run):
    metrics = assert_complete_run_dir(finished_run, num_test=32)
    job = json.loads((finished_run / "job.json").read_text())
    assert job["status"] == "succeeded" and job["objective"] == metrics["val_accuracy_top-1"]
    dumped = mmcv.Config.fromfile(str(finished_run / "work_dir/mmcls_config.py"))
    assert dumped.runner.max_epochs == 1 and dumped.data.test.type == "CifarFormat"
    assert "| val_accuracy_top-1 |" in (finished_run / "report.md").read_text()


def test_optimized_metric_selects_the_objective_without_training_again(copy_of_finished_run, data_root):
    cfg = compose_cfg([*tiny_overrides(data_root), "optimized_metric=val_f1_score"])
    stamp = (copy_of_finished_run / "metrics.json").stat().st_mtime_ns
    objective = run(cfg, copy_of_finished_run)
    assert objective == json.loads((copy_of_finished_run / "metrics.json").read_text())["val_f1_score"]
    assert (copy_of_finished_run / "metrics.json").stat().st_mtime_ns == stamp, "the objective is read, not re-run"


@pytest.mark.slow
def test_cli_run_in_a_subprocess(tmp_path, data_root):
    run_dir = tmp_path / "cli-run"
    result = run_cli(*tiny_overrides(data_root), f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_complete_run_dir(run_dir, num_test=32)
    assert f"run dir: {run_dir}" in result.stdout
    assert (run_dir / ".hydra/overrides.yaml").is_file()


def test_flip_tta_averages_the_scores_of_each_image_and_its_mirror(tmp_path, data_root):
    import numpy as np
    from mmcls.models import build_classifier
    from mmcv.runner import load_checkpoint

    from mmclf.models.config import to_mmcv_config
    from mmclf.steps.test import FLIP, predict

    cfg = compose_cfg([*tiny_overrides(data_root), "schedule.flip_tta=true"])
    run(cfg, tmp_path / "run")
    mm_cfg = to_mmcv_config(cfg, tmp_path / "run")
    model = build_classifier(mm_cfg.model)
    load_checkpoint(model, str(tmp_path / "run/work_dir/epoch_1.pth"), map_location="cpu")
    plain = predict(model, mm_cfg.data.test, mm_cfg)[1]
    mirrored = predict(model, dict(mm_cfg.data.test, pipeline=[FLIP, *mm_cfg.data.test.pipeline]), mm_cfg)[1]
    assert not np.allclose(plain, mirrored), "the mirror must change the scores for this test to mean anything"
    predictions = json.loads((tmp_path / "run/predictions.json").read_text())
    assert predictions["pred_label"] == ((plain + mirrored) / 2).argmax(axis=1).tolist()

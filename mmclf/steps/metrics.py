"""Step 5: turn val_result.json, eval_result.json, predictions and export.json into metrics.json, plots and
report.md."""
import logging

import numpy as np
from omegaconf import DictConfig

from mmclf.errors import StepError
from mmclf.reports import mlflow_model, report, tracking
from mmclf.reports.jobs import ONNX_METRICS
from mmclf.run.io import read_json, write_json_atomic
from mmclf.run.rundir import RunDir

log = logging.getLogger(__name__)


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (gt, pred), 1)
    return matrix


def build_metrics(val_result: dict, test_result: dict, predictions: dict, export_result: dict) -> dict:
    """Flat scalar metrics (mmcls's names, percent), ``val_``: the validation split, ``test_``: the test
    split, then the ONNX export's parity figures (when it exported); then the test split's per-class
    accuracy and confusion matrix."""
    classes = predictions["classes"]
    gt, pred = np.asarray(predictions["gt_label"]), np.asarray(predictions["pred_label"])
    matrix = confusion_matrix(gt, pred, len(classes))
    support = matrix.sum(axis=1)
    per_class = np.divide(100.0 * np.diag(matrix), support, out=np.zeros(len(classes)), where=support > 0)
    return {
        **{f"val_{key}": float(value) for key, value in val_result.items()},
        **{f"test_{key}": float(value) for key, value in test_result.items()},
        "num_test_images": int(len(gt)),
        **{key: float(export_result[key]) for key in ONNX_METRICS if key in export_result},
        "per_class_accuracy": {name: float(acc) for name, acc in zip(classes, per_class, strict=True)},
        "confusion_matrix": {"classes": classes, "matrix": matrix.tolist()},
    }


def metrics(cfg: DictConfig, run_dir: RunDir) -> None:
    """Write ``metrics.json``, ``confusion_matrix.png``, ``training_curve.png`` and ``report.md``."""
    for path in (run_dir.val_result, run_dir.eval_result, run_dir.predictions):
        if not path.is_file():
            raise StepError(f"{path}: missing; run the test step first")
    # No export.json: runtime.export.onnx=false (the export step removes an earlier one).
    export_result = read_json(run_dir.export_result) if run_dir.export_result.is_file() else {}
    result = build_metrics(read_json(run_dir.val_result), read_json(run_dir.eval_result),
                           read_json(run_dir.predictions), export_result)
    report.plot_confusion_matrix(result["confusion_matrix"], run_dir.confusion_matrix)
    curve = report.plot_training_curve(run_dir.work_dir, run_dir.training_curve)
    report.write_report(result, run_dir, has_curve=curve)
    run_id = tracking.report_results(cfg, run_dir, result)
    if run_id:
        log.info("MLflow run %s: final metrics and report logged", run_id)
    mlflow_model.register_on_gate(cfg, run_dir, result)
    # metrics.json last: its presence means the run is complete.
    write_json_atomic(run_dir.metrics, result)

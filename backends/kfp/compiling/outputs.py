"""What a run shows in the KFP UI and keeps beyond its volume: the model, the metrics and the report.

Output artifacts are uploaded to KFP's artifact store when a task ends, so they outlive the volume
(``backend.volume.delete_after``), show in the run's lineage and render in the v2 UI: ``Model``,
``Metrics``, ``ClassificationMetrics`` and an ``HTML`` report with its plots embedded (the UI cannot
follow report.md's relative image links into the volume).
"""
import base64
import html
import shutil
from pathlib import Path

from omegaconf import DictConfig

from backends.kfp.compiling.naming import model_name
from mmclf.models.config import class_count
from mmclf.reports.jobs import scalars, shown
from mmclf.run.io import read_json
from mmclf.run.rundir import RunDir


def export_model(cfg: DictConfig, run_dir: RunDir, path: str) -> dict:
    """Copy the final checkpoint and the mmcv config mmcls's tools load it with into folder ``path``, and
    the ONNX model and its labels when the export step wrote them (runtime.export.onnx); return the
    metadata that describes them."""
    epochs = cfg.schedule.runner.max_epochs
    checkpoint = run_dir.checkpoint(epochs)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, folder / checkpoint.name)
    shutil.copyfile(run_dir.mmcls_config, folder / RunDir.MMCLS_CONFIG)
    metadata = {"framework": "mmcls", "model": model_name(cfg), "dataset": cfg.data.name, "epochs": epochs,
                "num_classes": class_count(cfg, run_dir), "checkpoint": checkpoint.name, "config": RunDir.MMCLS_CONFIG}
    if run_dir.export_result.is_file():  # written last by the export step: the model passed its parity check
        for name in (RunDir.ONNX_MODEL, RunDir.LABELS):
            shutil.copyfile(run_dir / name, folder / name)
        metadata.update(onnx=RunDir.ONNX_MODEL, labels=RunDir.LABELS)
    return metadata


def log_kfp_metrics(run_dir: RunDir, metrics, classification) -> None:
    """Fill the KFP ``Metrics`` and ``ClassificationMetrics`` outputs from metrics.json."""
    result = read_json(run_dir.metrics)
    for key, value in scalars(result).items():
        metrics.log_metric(key, float(value))
    confusion = result["confusion_matrix"]
    classification.log_confusion_matrix(confusion["classes"], confusion["matrix"])


def _table(title: str, rows: dict) -> str:
    cells = "".join(f"<tr><td>{html.escape(str(key))}</td><td>{value}</td></tr>" for key, value in rows.items())
    return f"<h2>{title}</h2><table>{cells}</table>"


def _image(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<h2>{alt}</h2><img alt="{alt}" src="data:image/png;base64,{encoded}">'


def html_report(run_dir: RunDir) -> str:
    """One self-contained page: metrics.json's scalars and per-class accuracy, and both plots inline."""
    result = read_json(run_dir.metrics)
    numbers = {key: shown(value) for key, value in scalars(result).items()}
    per_class = {name: f"{accuracy:.2f}" for name, accuracy in result["per_class_accuracy"].items()}
    style = "body{font-family:sans-serif} td{padding:2px 12px} img{max-width:100%}"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>mmclf run report</title><style>{style}"
            f"</style></head><body><h1>mmclf run report</h1>{_table('Metrics', numbers)}"
            f"{_table('Per-class accuracy (%)', per_class)}{_image(run_dir.confusion_matrix, 'Confusion matrix')}"
            f"{_image(run_dir.training_curve, 'Training curve')}</body></html>\n")


def write_html_report(run_dir: RunDir, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(html_report(run_dir), encoding="utf-8")

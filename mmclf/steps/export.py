"""Step 4: export the trained model to ONNX (``model.onnx``, ``labels.txt``), its parity with PyTorch measured.

The graph takes what a client has, uint8 RGB images (N, S, S, 3) of the stored size (mmclf/data/views.py)
as ``mmclf.data.image_folder.decode`` makes them, and returns softmax scores (N, classes): the run's test
pipeline is inside it (mmclf/deploy/onnx_graph.py). Before anything is written, onnxruntime (on the CPU) and
PyTorch (the run's model through its test pipeline: mmclf.deploy.predict's Predictor, as the test step runs it)
score every test image the test step scored; the model is kept only when their top-1 accuracies are
within MAX_TOP1_DIFF points and no score differs by more than MAX_SCORE_DIFF. ``export.json`` records
the figures. ``runtime.export.onnx=false``: nothing is exported.

The exporter is torch.onnx's TorchScript one (``dynamo=False``): it exports these models in a tenth of
a second, where the torch.export-based one takes 3 s for a narrow ResNet-18 on 2 CPUs (on every run)
and needs onnxscript besides; mmcls's own deployment tools use it too.
"""
import io
import logging
import warnings

import numpy as np
from omegaconf import DictConfig, OmegaConf

from mmclf.deploy.predict import ONNX_INPUT, ONNX_OUTPUT, OnnxPredictor, Predictor
from mmclf.errors import ExportError
from mmclf.reports import mlflow_model
from mmclf.reports.jobs import ONNX_METRICS
from mmclf.run.io import write_bytes_atomic, write_json_atomic, write_text_atomic
from mmclf.run.rundir import RunDir

log = logging.getLogger(__name__)
OPSET = 17
MAX_TOP1_DIFF = 0.1  # points of test top-1 accuracy
MAX_SCORE_DIFF = 1e-3  # of any softmax score (fp32 on both sides)
BATCH = 64  # images per forward pass, on either side
TRACED_BATCH = 2  # the example batch the exporter traces; parity is measured on other sizes too
SMOKE_IMAGES = 4  # test images kept with model.onnx's scores, for backend.serve's smoke inference


def wanted(cfg: DictConfig) -> bool:
    """``runtime.export.onnx`` (a config without it exports nothing)."""
    return bool(OmegaConf.select(cfg, "runtime.export.onnx", default=False))


def test_split(cfg: DictConfig, run_dir: RunDir) -> tuple[list, np.ndarray]:
    """(decoded images, labels) of the test split, as the test step's dataset holds them."""
    from mmcls.datasets import build_dataset

    from mmclf.models.config import to_mmcv_config
    from mmclf.setup_env import register_all_modules

    register_all_modules()

    dataset = build_dataset(to_mmcv_config(cfg, run_dir).data.test, default_args=dict(test_mode=True))
    return [info["img"] for info in dataset.data_infos], dataset.get_gt_labels()


def to_onnx(predictor: Predictor) -> bytes:
    """The predictor's model with its test pipeline in front (mmclf/deploy/onnx_graph.py), as ONNX, batch dynamic."""
    import torch

    from mmclf.deploy.onnx_graph import ExportedClassifier

    module = ExportedClassifier(predictor.model, predictor.pipeline.transforms, predictor.image_size).eval()
    example = torch.zeros((TRACED_BATCH, predictor.image_size, predictor.image_size, 3), dtype=torch.uint8)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, chosen: see above
            torch.onnx.export(module, (example,), buffer, input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                              dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
    except Exception as err:  # an operator torch.onnx has no ONNX version of, in some zoo model
        raise ExportError(f"runtime.export.onnx: torch.onnx cannot export this model ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); set runtime.export.onnx=false") from None
    return buffer.getvalue()


def batched_scores(predictor, images: list) -> np.ndarray:
    """``predictor.scores`` of ``images``: the first alone, then BATCH at a time. A graph that kept the traced
    batch size instead of taking any (Swin's window partition does, with either torch.onnx exporter) gives
    wrong scores or fails on the first already."""
    chunks = [images[:1], *(images[start:start + BATCH] for start in range(1, len(images), BATCH))]
    return np.vstack([predictor.scores(chunk) for chunk in chunks])


def onnx_scores(model: bytes, classes: list[str], images: list) -> np.ndarray:
    """``batched_scores`` of ``images`` under onnxruntime, its failures one line."""
    try:
        return batched_scores(OnnxPredictor(model, classes), images)
    except Exception as err:  # onnxruntime's own error types: a shape or operator the graph cannot take
        raise ExportError(f"runtime.export.onnx: onnxruntime cannot run the exported model ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); set runtime.export.onnx=false") from None


def parity(onnx_scores: np.ndarray, torch_scores: np.ndarray, labels: np.ndarray) -> dict:
    """ONNX_METRICS of two sets of scores of the same labelled images."""
    onnx_top1, torch_top1 = onnx_scores.argmax(axis=1), torch_scores.argmax(axis=1)
    accuracy_diff = 100.0 * abs(np.mean(onnx_top1 == labels) - np.mean(torch_top1 == labels))
    figures = (100.0 * np.mean(onnx_top1 == torch_top1), accuracy_diff, np.abs(onnx_scores - torch_scores).max())
    return dict(zip(ONNX_METRICS, map(float, figures), strict=True))


def check_parity(figures: dict, images: int) -> None:
    """Refuse an export whose figures are out of bounds (a NaN is out of bounds too)."""
    accuracy_diff, score_diff = figures["onnx_top1_accuracy_diff"], figures["onnx_max_abs_score_diff"]
    if not (accuracy_diff <= MAX_TOP1_DIFF and score_diff <= MAX_SCORE_DIFF):
        raise ExportError(f"runtime.export.onnx: the ONNX model does not give PyTorch's results on the {images} test "
                          f"images (top-1 accuracy {accuracy_diff:.2f} points apart, at most {MAX_TOP1_DIFF} allowed; "
                          f"a score {score_diff:.2e} apart, at most {MAX_SCORE_DIFF:.0e} allowed), so none was kept; "
                          "the training and test results stand. Set runtime.export.onnx=false to finish without it")


def smoke_test(images: list, scores: np.ndarray) -> bytes:
    """The first SMOKE_IMAGES test images (uint8, N x S x S x 3) and model.onnx's scores of them, as .npz bytes:
    what an endpoint serving this model must answer (backends/kfp/serving/readiness.py)."""
    buffer = io.BytesIO()
    np.savez(buffer, images=np.stack(images[:SMOKE_IMAGES]), scores=scores[:SMOKE_IMAGES])
    return buffer.getvalue()


def remove_outputs(run_dir: RunDir) -> None:
    """No model.onnx, labels.txt or export.json from an earlier export beside this run's results."""
    for path in (run_dir.export_result, run_dir.onnx_model, run_dir.labels, run_dir.smoke_test):
        path.unlink(missing_ok=True)  # export.json first: the record of a passed export


def export(cfg: DictConfig, run_dir: RunDir) -> None:
    """Write ``model.onnx`` and ``labels.txt`` into ``run_dir`` when onnxruntime gives PyTorch's scores on
    the test split, then ``export.json`` (the figures); with ``runtime.export.onnx=false``, nothing."""
    remove_outputs(run_dir)
    if not wanted(cfg):
        log.info("export: runtime.export.onnx=false, no ONNX model")
        return
    predictor = Predictor(run_dir, device="cpu")  # the export pod has no GPU; PyTorch's CPU scores are the reference
    model = to_onnx(predictor)
    images, labels = test_split(cfg, run_dir)
    scores = onnx_scores(model, predictor.classes, images)
    figures = parity(scores, batched_scores(predictor, images), labels)
    log.info("export: ONNX against PyTorch on %d test images: top-1 agreement %.2f%%, accuracy %.2f points apart, "
             "scores at most %.2e apart", len(images), *figures.values())
    check_parity(figures, len(images))
    write_text_atomic(run_dir.labels, "".join(f"{name}\n" for name in predictor.classes))
    write_bytes_atomic(run_dir.onnx_model, model)
    write_bytes_atomic(run_dir.smoke_test, smoke_test(images, scores))
    write_json_atomic(run_dir.export_result, {
        **figures, "test_images": len(images), "opset": OPSET, "input": ONNX_INPUT, "output": ONNX_OUTPUT,
        "image_size": predictor.image_size, "max_top1_accuracy_diff": MAX_TOP1_DIFF,
        "max_abs_score_diff": MAX_SCORE_DIFF})
    mlflow_model.log_model(cfg, run_dir, images)  # logger=mlflow: the model where MLflow users look

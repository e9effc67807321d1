"""Classify new images with a finished run: ``python -m mmclf.predict RUN_DIR IMAGE_OR_FOLDER...``.

The run's own resolved config (``config.yaml``) and final checkpoint: each image is decoded as
prepare-data decodes a folder split (mmclf/data/image_folder.py: RGB, EXIF-rotated, a square of the
stored size, mmclf/data/views.py), then goes through the run's test pipeline, so predicting a run's own test
images reproduces its ``predictions.json``. With ``--onnx``, the run's exported ``model.onnx`` (the test
pipeline inside it) and ``labels.txt`` under onnxruntime instead, without torch or mmcls. Prints the
top-k classes by name with their scores, as a table or (``--json``) one JSON line per image.
"""
import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from mmclf.data import image_folder
from mmclf.data.views import keeps_aspect
from mmclf.errors import ConfigError, DataError, StepError, one_line_errors
from mmclf.run.io import read_json
from mmclf.run.rundir import RunDir

log = logging.getLogger(__name__)
CIFAR_SIZE = 32  # datasets without data.image_size (cifar10) hold 32x32 images
# The exported graph's input, uint8 RGB images (N, S, S, 3), and output, softmax scores (N, classes).
ONNX_INPUT, ONNX_OUTPUT = "images", "scores"


def image_files(paths: list[str]) -> list[Path]:
    """The image files among ``paths``, folders searched recursively (hidden and non-image files skipped)."""
    found = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += [path / name for name in image_folder.images_under(path, path, Counter())]
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{path}: no such image or folder")
    if not found:
        raise DataError(f"{', '.join(paths)}: no image files ({', '.join(image_folder.IMAGE_SUFFIXES)}) there")
    return found


def refuse_non_run(run_dir: RunDir) -> None:
    """A folder without config.yaml is no run dir: one line, naming it."""
    if not run_dir.config.is_file():
        raise StepError(f"{run_dir.path}: not an mmclf run dir (no {RunDir.CONFIG}); give the folder a run printed")


def load_run(run_dir: RunDir):
    """(the run's config, its final checkpoint), refusing a run dir that has none."""
    refuse_non_run(run_dir)
    cfg = OmegaConf.load(run_dir.config)
    checkpoint = run_dir.checkpoint(cfg.schedule.runner.max_epochs)
    if not checkpoint.is_file():
        raise StepError(f"{run_dir.path}: its train step has not finished ({checkpoint.name} missing); run the same "
                        "command again to finish it")
    return cfg, checkpoint


class Predictor:
    """A run's model on ``device`` with its test pipeline: class scores for decoded images."""

    def __init__(self, run_dir: RunDir, device: str = "auto"):
        import mmcv
        import torch
        from mmcls.datasets.pipelines import Compose
        from mmcls.models import build_classifier
        from mmcv.runner import load_checkpoint

        from mmclf.models.config import resolve_device

        cfg, checkpoint = load_run(run_dir)
        self.device = resolve_device(device)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is visible here; use --device auto or cpu")
        self.image_size = stored_view(run_dir)[0] or cfg.data.get("image_size") or CIFAR_SIZE
        # the model and test pipeline the run's train step dumped: a run made by an earlier mmclf keeps its own
        mm_cfg = mmcv.Config.fromfile(str(run_dir.mmcls_config))
        self.model = build_classifier(mm_cfg.model)
        meta = load_checkpoint(self.model, str(checkpoint), map_location="cpu").get("meta", {})
        self.model.to(self.device).eval()
        self.classes = list(meta.get("CLASSES") or json.loads(run_dir.predictions.read_text())["classes"])
        self.pipeline = Compose(mm_cfg.data.test.pipeline)

    def scores(self, images: list[np.ndarray]) -> np.ndarray:
        """Softmax scores (N, classes) of decoded RGB images, as mmcls's test step computes them."""
        import torch

        batch = torch.stack([self.pipeline({"img": image})["img"] for image in images]).to(self.device)
        with torch.no_grad():
            return np.vstack(self.model(img=batch, return_loss=False))


class OnnxPredictor:
    """An exported model (a path or its bytes) under onnxruntime on the CPU: the Predictor's scores, without
    torch or mmcls; the graph's input shape gives the image size."""

    def __init__(self, model, classes: list[str]):
        import onnxruntime

        source = model if isinstance(model, bytes) else str(model)
        self.session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
        self.classes = classes
        self.image_size = self.session.get_inputs()[0].shape[1]

    @classmethod
    def of_run(cls, run_dir: RunDir) -> "OnnxPredictor":
        """The run's model.onnx with its labels.txt, refusing a run dir that has none."""
        refuse_non_run(run_dir)
        if not run_dir.onnx_model.is_file():
            raise StepError(f"{run_dir.path}: no {RunDir.ONNX_MODEL} (the run had runtime.export.onnx=false, or its "
                            "export step has not finished); predict without --onnx")
        return cls(run_dir.onnx_model, run_dir.labels.read_text(encoding="utf-8").splitlines())

    def scores(self, images: list[np.ndarray]) -> np.ndarray:
        """Softmax scores (N, classes) of decoded RGB images."""
        return self.session.run([ONNX_OUTPUT], {ONNX_INPUT: np.stack(images)})[0]


def stored_view(run_dir: RunDir) -> tuple[int | None, bool]:
    """(the side of the stored squares, whether they keep each image's aspect ratio) as the run's data.json
    says (mmclf/data/views.py): (None, False) for generated data, which has none; folder runs made before
    aspect-kept views have no ``stored_size`` there and stored squashed squares of ``image_size``."""
    if not run_dir.data_manifest.is_file():
        return None, False
    manifest = read_json(run_dir.data_manifest)
    stored = manifest.get("stored_size", manifest["image_size"])
    return stored, keeps_aspect(stored, manifest["image_size"])


def decode_or_refuse(path: Path, size: int, keep_aspect: bool) -> np.ndarray:
    try:
        return image_folder.decode(path, size, keep_aspect)
    except Exception as err:
        raise DataError(f"{path}: cannot be read as an image ({type(err).__name__}: {err}); fix or leave it "
                        "out") from None


def top_k(scores: np.ndarray, classes: list[str], k: int) -> list[dict]:
    order = np.argsort(-scores, kind="stable")[:k]
    return [{"class": classes[i], "score": round(float(scores[i]), 6)} for i in order]


def predict(run_dir, paths: list[str], device: str = "auto", k: int = 5, batch: int = 64, onnx: bool = False):
    """Yield ``{"path", "top_k"}`` for every image under ``paths``, in order, ``batch`` at a time; with
    ``onnx``, through the run's model.onnx (on the CPU: ``device`` is not used)."""
    files = image_files(paths)
    predictor = OnnxPredictor.of_run(RunDir(run_dir)) if onnx else Predictor(RunDir(run_dir), device)
    k, keep_aspect = min(k, len(predictor.classes)), stored_view(RunDir(run_dir))[1]
    for start in range(0, len(files), batch):
        chunk = files[start:start + batch]
        scores = predictor.scores([decode_or_refuse(path, predictor.image_size, keep_aspect) for path in chunk])
        for path, row in zip(chunk, scores, strict=True):
            yield {"path": str(path), "top_k": top_k(row, predictor.classes, k)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmclf.predict", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished run's folder (the 'run dir' a run prints)")
    parser.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (default 5)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--json", action="store_true", help="one JSON line per image instead of a table")
    parser.add_argument("--onnx", action="store_true",
                        help="through the run's model.onnx with onnxruntime on the CPU (no torch, no mmcls)")
    args = parser.parse_args(argv)
    if args.top_k < 1 or args.batch < 1:
        parser.error("--top-k and --batch must be positive")
    if args.onnx and args.device == "cuda":
        parser.error("--onnx runs on the CPU (onnxruntime); leave out --device cuda")
    with one_line_errors(os_errors=True):
        for result in predict(args.run_dir, args.images, args.device, args.top_k, args.batch, args.onnx):
            if args.json:
                print(json.dumps(result), flush=True)
            else:
                shown = "  ".join(f"{c['class']} {100 * c['score']:.1f}%" for c in result["top_k"])
                print(f"{result['path']}\t{shown}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

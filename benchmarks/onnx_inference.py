"""Inference on this CPU side by side in one run, on the same decoded images: (a) PyTorch, the run's
mmcls model through its test pipeline as the test step runs it (``mmclf.deploy.predict.Predictor``), against
(b) onnxruntime on the run's exported ``model.onnx``, the same pipeline inside the graph
(``mmclf.deploy.predict.OnnxPredictor``), at each ``--batches`` size; and the largest score difference between them.

    python benchmarks/onnx_inference.py                      # trains a 1-epoch ResNet-18 first, about a minute
    python benchmarks/onnx_inference.py --run-dir RUN        # a finished run of yours (with model.onnx)

Without ``--run-dir`` a run is set up first (not timed): a generated image folder in a temp dir and one
epoch of mmclf's default model (mmcls's ResNet-18 for CIFAR, full width) at ``--image-size`` px; extra
arguments are mmclf overrides for that run (e.g. a narrower model). Either way the benchmarked images
are the generated folder's, decoded once to the run's image size as ``mmclf.deploy.predict`` decodes them.
Each batch is timed alone (the first batch of each path and size, before the rounds, is left out); a
path's img/s at a batch size is the median over every batch of ``--rounds`` interleaved rounds.
Prints a table with ratios and writes JSON.
"""
import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from publish import publish  # benchmarks/: print the table, write the JSON

import mmclf.schema  # noqa: F401  (registers the typed schemas before composing)
from mmclf.data import image_folder
from mmclf.deploy.predict import OnnxPredictor, Predictor, stored_view
from mmclf.run.rundir import RunDir

REPO = Path(__file__).resolve().parent.parent
SEED = 0
CLASSES = 4
PATHS = {"pytorch": "(a) PyTorch: mmcls model + test pipeline", "onnx": "(b) onnxruntime: model.onnx"}


def write_folder(root: Path, num_images: int, seed: int = SEED) -> Path:
    """``num_images`` training images and a quarter as many test images, ``root/<split>/<class>/<n>.jpg|png``,
    each 24-96 px a side, each class its own colour under noise."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, size=(CLASSES, 3))
    for split, count in (("train", num_images), ("test", max(CLASSES, num_images // 4))):
        for n in range(count):
            label = n % CLASSES
            path = root / split / f"class{label}" / f"{n}{'.png' if n % 4 == 3 else '.jpg'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            height, width = rng.integers(24, 97, size=2)
            pixels = rng.normal(colours[label], 25, size=(height, width, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return root


def train_run(root: Path, run_dir: Path, image_size: int, overrides: list) -> None:
    """One epoch of ``data=folder`` on ``root`` with mmclf's defaults otherwise (export step included)."""
    from mmclf.task import run

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "data=folder", f"data.root={root}", f"data.cache_dir={run_dir.parent / 'cache'}",
            f"data.image_size={image_size}", "data.workers_per_gpu=0",
            "data.persistent_workers=false", "schedule=quick", "schedule.runner.max_epochs=1", "device=cpu",
            *overrides])
    run(cfg, run_dir)


def model_name(model) -> str:
    """The backbone's class and depth, e.g. ``ResNet_CIFAR-18``."""
    backbone = model.backbone
    return type(backbone).__name__ + (f"-{backbone.depth}" if hasattr(backbone, "depth") else "")


def time_batches(predictor, images: list, batch: int) -> list:
    """Seconds of each full batch of ``images``."""
    out = []
    for start in range(0, len(images) - batch + 1, batch):
        chunk = images[start:start + batch]
        started = time.perf_counter()
        predictor.scores(chunk)
        out.append(time.perf_counter() - started)
    return out


def table(report: dict) -> str:
    setup, results = report["setup"], report["results"]
    lines = [f"inference on {setup['cpus']} CPUs: {setup['images']} images of {setup['image_size']} px, "
             f"{setup['model']}, {setup['rounds']} round(s), medians",
             f"torch {setup['torch']} ({setup['torch_threads']} threads), onnxruntime {setup['onnxruntime']}",
             f"{'path':42s} {'batch':>5s} {'img/s':>10s}  {'ratio':>7s}"]
    for batch in setup["batches"]:
        for name, label in PATHS.items():
            rate, base = results[str(batch)][name]["img_per_s"], results[str(batch)]["pytorch"]["img_per_s"]
            lines.append(f"{label:42s} {batch:5d} {rate:10.1f}  {rate / base:6.2f}x")
    lines.append("onnx / pytorch: " + ", ".join(f"{report['ratios'][str(batch)]:.2f}x at batch {batch}"
                                                for batch in setup["batches"]))
    lines.append(f"max abs score difference, onnx vs pytorch, over the {setup['images']} images: "
                 f"{report['max_abs_diff']:.2e}")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, help="a finished run with model.onnx (default: train one first)")
    parser.add_argument("--image-size", type=int, default=32, help="the set-up run's image size, px (default 32)")
    parser.add_argument("--num-images", type=int, default=256,
                        help="generated train images (and a quarter as many test ones), all benchmarked (default 256)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="batch sizes (default 1 64)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmarks" / "onnx_inference.json")
    parser.add_argument("overrides", nargs="*", help="mmclf overrides for the set-up run (e.g. a narrower model)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run the benchmark, print the table, write the JSON report and return it."""
    args = parse_args(argv)
    logging.getLogger("mmcv").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="mmclf-onnx-bench-") as tmp:
        root = write_folder(Path(tmp) / "images", args.num_images)
        run_dir = args.run_dir or Path(tmp) / "run"
        if args.run_dir is None:
            train_run(root, run_dir, args.image_size, args.overrides)
        predictors = {"pytorch": Predictor(RunDir(run_dir), "cpu"), "onnx": OnnxPredictor.of_run(RunDir(run_dir))}
        size, keep_aspect = predictors["pytorch"].image_size, stored_view(RunDir(run_dir))[1]
        files = sorted(path for split in ("train", "test") for path in (root / split).rglob("*")
                       if path.suffix.lower() in image_folder.IMAGE_SUFFIXES)
        images = [image_folder.decode(path, size, keep_aspect) for path in files]
    if len(images) < max(args.batches):
        sys.exit(f"onnx_inference: {len(images)} images; give at least the largest --batches ({max(args.batches)})")
    max_abs_diff = float(np.abs(predictors["onnx"].scores(images) - predictors["pytorch"].scores(images)).max())
    for predictor in predictors.values():  # warm-up: first calls allocate (left out)
        for batch in args.batches:
            predictor.scores(images[:batch])
    seconds = {(batch, name): [] for batch in args.batches for name in predictors}
    for _ in range(args.rounds):
        for batch in args.batches:
            for name, predictor in predictors.items():
                seconds[batch, name].append(time_batches(predictor, images, batch))
    results = {str(batch): {name: {"img_per_s": statistics.median(batch / s for r in seconds[batch, name] for s in r),
                                   "rounds": [batch * len(r) / sum(r) for r in seconds[batch, name]],
                                   "batches_timed": sum(len(r) for r in seconds[batch, name])}
                            for name in predictors} for batch in args.batches}
    ratios = {key: entry["onnx"]["img_per_s"] / entry["pytorch"]["img_per_s"] for key, entry in results.items()}
    model = model_name(predictors["pytorch"].model) + (f" {' '.join(args.overrides)}" if args.overrides else "")
    setup = {"run_dir": str(args.run_dir) if args.run_dir else "generated", "images": len(images), "image_size": size,
             "model": model,
             "batches": args.batches, "rounds": args.rounds, "cpus": os.cpu_count(), "torch": torch.__version__,
             "torch_threads": torch.get_num_threads(), "onnxruntime": onnxruntime.__version__}
    report = {"setup": setup, "results": results, "ratios": ratios, "max_abs_diff": max_abs_diff}
    return publish(report, table(report), args.out)


if __name__ == "__main__":
    main(sys.argv[1:])

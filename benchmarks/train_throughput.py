"""Training throughput side by side in one process: the same model, data and batch size on
(a) mmcls's reference path (``mmcls.apis.train_model``: DataLoader + numpy pipeline),
(b) mmclf's fast path (``mmclf.training.fast.train_model``: device loader, ``runtime.perf``), and
(c) a hand-written PyTorch loop over pre-augmented device tensors (the practical limit);
then the data paths alone (mmcls's DataLoader vs the device loader).

    python benchmarks/train_throughput.py                  # CPU-sized (about a minute)
    python benchmarks/train_throughput.py --full           # GPU: 50,000 synthetic 32x32 images
    python benchmarks/train_throughput.py runtime.perf.compile=true   # any mmclf override

Each step (training iteration or data batch) is timed from the end of the previous step to its own
end, so it includes fetching its batch and every hook; the first step of each epoch is left out of
every path alike (DataLoader start-up, and mmcv's 2-second pause at each epoch start, which the
fast path drops). The paths run in ``--rounds`` interleaved rounds, and a path's throughput is
the median over all its steps, which shrugs off bursts of other load on a shared machine. A
second column gives end-to-end img/s (all images over the whole training call, epoch starts
included: what a user waits for), the median over rounds.
Prints a table with ratios and writes JSON.
"""
import argparse
import copy
import itertools
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from mmcls.apis import set_random_seed
from mmcls.apis import train_model as mmcls_train_model
from mmcls.datasets import build_dataloader, build_dataset
from mmcls.models import build_classifier
from mmcls.utils import get_root_logger
from mmcv.runner import HOOKS, Hook, build_optimizer
from publish import publish  # benchmarks/: print the table, write the JSON

import mmclf.schema  # noqa: F401  (registers the typed schemas before composing)
from mmclf.data import datasets, sources  # noqa: F401  (datasets registers CifarFormat in mmcls's DATASETS)
from mmclf.models.config import to_mmcv_config
from mmclf.training.fast import device_loader
from mmclf.training.fast.precision import prepare_model, resolve_perf
from mmclf.training.fast.runner import train_model as fast_train_model

REPO = Path(__file__).resolve().parent.parent
# Per size: synthetic images, side, batch, training epochs, data-path epochs, DataLoader workers
# (0 on a small CPU, where workers would take cores from the model; 2 as in conf/data/cifar10.yaml on a GPU).
SIZES = {
    "cpu": dict(num_train=512, image_size=16, batch=64, epochs=1, data_epochs=5, workers=0),
    "full": dict(num_train=50_000, image_size=32, batch=512, epochs=2, data_epochs=2, workers=2),
}
TARGETS = {"fast_vs_reference": 1.0, "fast_vs_reference_end_to_end": 1.0, "fast_vs_plain": 0.9,
           "data_device_vs_reference": 5.0}


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepClock:
    """Images/s of each steady-state step: from the end of the previous step to the end of this
    one (its batch's fetch and every hook included); an epoch's first step only starts the clock.

    Also end to end: every image over the time from the clock's start to the last step, epoch
    starts included (DataLoader start-up, mmcv's pause), which is what a user waits for."""

    def __init__(self):
        self.speeds, self.last, self.images = [], None, 0
        self.started = time.perf_counter()

    def tick(self, images: int, first_of_epoch: bool) -> None:
        synchronize()
        now = time.perf_counter()
        if not first_of_epoch:
            self.speeds.append(images / (now - self.last))
        self.last, self.images = now, self.images + images

    def end_to_end(self) -> float:
        return self.images / (self.last - self.started)


@HOOKS.register_module()
class ThroughputHook(Hook):
    """A StepClock on a runner's training iterations, after the optimizer step and the loggers."""

    latest = None  # mmcls's train_model does not return its runner: the benchmark reads this

    def before_run(self, runner):
        self.clock = StepClock()
        ThroughputHook.latest = self.clock

    def after_train_iter(self, runner):
        self.clock.tick(runner.outputs["num_samples"], runner.inner_iter == 0)


def compose_config(size: dict, data_root: Path, overrides: list):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[
            "data=synthetic", "data.num_classes=10", f"data.image_size={size['image_size']}",
            f"data.num_train={size['num_train']}", "data.num_test=10", f"data.root={data_root}",
            f"data.samples_per_gpu={size['batch']}", f"data.workers_per_gpu={size['workers']}",
            f"data.persistent_workers={size['workers'] > 0}", f"schedule.runner.max_epochs={size['epochs']}",
            "runtime.log_config.interval=1000000", "runtime.log_level=WARNING", *overrides])


def fresh_model(mm_cfg):
    """The configured mmcls classifier, initialised from the run's seed (the same for every path)."""
    set_random_seed(mm_cfg.seed)
    model = build_classifier(mm_cfg.model)
    model.init_weights()
    return model


def run_config(mm_cfg, work_dir: Path):
    cfg = copy.deepcopy(mm_cfg)
    cfg.work_dir = str(work_dir)
    cfg.custom_hooks = [dict(type="ThroughputHook", priority="LOWEST")]  # after the optimizer step and loggers
    return cfg


def train_reference(mm_cfg, dataset, work_dir: Path) -> list:
    cfg = run_config(mm_cfg, work_dir)
    mmcls_train_model(fresh_model(cfg), [dataset], cfg, device=cfg.device, meta={})
    return ThroughputHook.latest


def train_fast(mm_cfg, dataset, work_dir: Path) -> list:
    cfg = run_config(mm_cfg, work_dir)
    fast_train_model(fresh_model(cfg), [dataset], cfg, device=cfg.device, meta={})
    return ThroughputHook.latest


def train_plain(mm_cfg, dataset, work_dir: Path) -> list:
    """forward, cross-entropy, backward, SGD step over batches the device loader made beforehand."""
    perf = resolve_perf(mm_cfg.get("perf"), mm_cfg.device)
    loader = device_loader.from_dataset(dataset, mm_cfg.data.train.pipeline, mm_cfg.data.samples_per_gpu,
                                        mm_cfg.device, mm_cfg.seed, perf.channels_last)
    batches = list(loader)
    model = prepare_model(fresh_model(mm_cfg), mm_cfg.device, perf).module
    optimizer = build_optimizer(model, mm_cfg.optimizer)
    smoothing = mm_cfg.model.head.loss.get("label_smooth_val", 0.0)
    model.train()
    clock = StepClock()
    for _ in range(mm_cfg.runner.max_epochs):
        for i, batch in enumerate(batches):
            with torch.autocast(mm_cfg.device, dtype=perf.autocast_dtype, enabled=perf.autocast_dtype is not None):
                features = model.neck(model.backbone(batch["img"]))[-1]
                loss = F.cross_entropy(model.head.fc(features), batch["gt_label"], label_smoothing=smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            clock.tick(len(batch["gt_label"]), i == 0)
    return clock


def time_epochs(loader, epochs: int, device: str) -> StepClock:
    """A StepClock over ``epochs`` passes through ``loader``, each batch moved to ``device``."""
    clock = StepClock()
    for _ in range(epochs):
        for i, batch in enumerate(loader):
            batch["img"].to(device, non_blocking=True)  # the reference's batches still have to get there
            clock.tick(len(batch["img"]), i == 0)
    return clock


def data_reference(mm_cfg, dataset, epochs: int) -> list:
    loader = build_dataloader(dataset, mm_cfg.data.samples_per_gpu, mm_cfg.data.workers_per_gpu, dist=False,
                              shuffle=True, seed=mm_cfg.seed, persistent_workers=mm_cfg.data.persistent_workers)
    return time_epochs(loader, epochs, mm_cfg.device)


def data_device(mm_cfg, dataset, epochs: int) -> list:
    perf = resolve_perf(mm_cfg.get("perf"), mm_cfg.device)
    loader = device_loader.from_dataset(dataset, mm_cfg.data.train.pipeline, mm_cfg.data.samples_per_gpu,
                                        mm_cfg.device, mm_cfg.seed, perf.channels_last)
    return time_epochs(loader, epochs, mm_cfg.device)


TRAIN_PATHS = {"train_reference": train_reference, "train_fast": train_fast, "train_plain": train_plain}
DATA_PATHS = {"data_reference": data_reference, "data_device": data_device}
LABELS = {
    "train_reference": "train (a) mmcls reference path",
    "train_fast": "train (b) mmclf fast path",
    "train_plain": "train (c) plain PyTorch loop",
    "data_reference": "data  mmcls DataLoader + pipeline",
    "data_device": "data  mmclf device loader",
}


def measure(mm_cfg, dataset, size: dict, rounds: int, work_root: Path) -> dict:
    """Per path: the median img/s over the steps of ``rounds`` interleaved rounds, each round's median,
    and the median over rounds of the end-to-end img/s."""
    runs = {name: [] for name in [*TRAIN_PATHS, *DATA_PATHS]}
    for round_index in range(rounds):
        for name, path in TRAIN_PATHS.items():
            runs[name].append(path(mm_cfg, dataset, work_root / f"{name}_{round_index}"))
        for name, path in DATA_PATHS.items():
            runs[name].append(path(mm_cfg, dataset, size["data_epochs"]))
    return {name: {"img_per_s": statistics.median(itertools.chain(*(c.speeds for c in clocks))),
                   "steps": sum(len(c.speeds) for c in clocks),
                   "rounds": [statistics.median(c.speeds) for c in clocks],
                   "end_to_end_img_per_s": statistics.median(c.end_to_end() for c in clocks)}
            for name, clocks in runs.items()}


def ratios(results: dict) -> dict:
    speed = {name: entry["img_per_s"] for name, entry in results.items()}
    return {
        "fast_vs_reference": speed["train_fast"] / speed["train_reference"],
        "fast_vs_reference_end_to_end": (results["train_fast"]["end_to_end_img_per_s"]
                                         / results["train_reference"]["end_to_end_img_per_s"]),
        "fast_vs_plain": speed["train_fast"] / speed["train_plain"],
        "plain_vs_reference": speed["train_plain"] / speed["train_reference"],
        "data_device_vs_reference": speed["data_device"] / speed["data_reference"],
    }


def table(report: dict) -> str:
    setup, results, ratio = report["setup"], report["results"], report["ratios"]
    lines = [f"training throughput on {setup['device']}: {setup['model']}, {setup['num_train']} synthetic "
             f"{setup['image_size']}x{setup['image_size']} images, batch {setup['batch']}, "
             f"median of {setup['rounds']} round(s); perf {setup['perf']}",
             f"{'path':40s} {'img/s':>10s}  ratio  {'end-to-end img/s':>16s}  ratio"]
    relative = {"train_reference": "train_reference", "train_fast": "train_reference",
                "train_plain": "train_reference", "data_reference": "data_reference", "data_device": "data_reference"}
    for name, entry in results.items():
        base, whole = results[relative[name]]["img_per_s"], entry["end_to_end_img_per_s"]
        base_whole = results[relative[name]]["end_to_end_img_per_s"]
        lines.append(f"{LABELS[name]:40s} {entry['img_per_s']:10.1f}  {entry['img_per_s'] / base:5.2f}x"
                     f"  {whole:16.1f}  {whole / base_whole:5.2f}x")
    lines.append(f"fast path / plain loop: {ratio['fast_vs_plain']:.2f}x")
    checks = [f"{key} {ratio[key]:.2f} (>= {goal}: {'met' if ratio[key] >= goal else 'NOT met'})"
              for key, goal in TARGETS.items()]
    lines.append("targets (for CPU): " + "; ".join(checks))
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="GPU size: 50,000 images of 32x32, batch 512")
    for key in SIZES["cpu"]:
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"override the size's {key}")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmarks" / "train_throughput.json")
    parser.add_argument("overrides", nargs="*", help="mmclf overrides, e.g. device=cpu runtime.perf.compile=true")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run the benchmark, print the table, write the JSON report and return it."""
    args = parse_args(argv)
    size = dict(SIZES["full" if args.full else "cpu"])
    size.update({key: getattr(args, key) for key in size if getattr(args, key) is not None})
    if size["num_train"] < 2 * size["batch"]:
        sys.exit("train_throughput: --num-train must be at least twice --batch (each epoch's first step is not timed)")
    # Quiet mmcv's weight-init table and runner banners: one table is the output here.
    logging.getLogger("mmcv").setLevel(logging.WARNING)
    get_root_logger(log_level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="mmclf-bench-") as tmp:
        cfg = compose_config(size, Path(tmp) / "data", args.overrides)
        sources.prepare(cfg.data)
        mm_cfg = to_mmcv_config(cfg, Path(tmp) / "run")
        dataset = build_dataset(mm_cfg.data.train)
        results = measure(mm_cfg, dataset, size, args.rounds, Path(tmp))
    perf = resolve_perf(mm_cfg.get("perf"), mm_cfg.device)
    setup = {**size, "rounds": args.rounds, "device": mm_cfg.device, "overrides": args.overrides,
             "model": f"{mm_cfg.model.backbone.type}-{mm_cfg.model.backbone.depth}",
             "perf": {"autocast": str(perf.autocast_dtype or "fp32").replace("torch.", ""),
                      "channels_last": perf.channels_last, "compile": perf.compile},
             "torch": torch.__version__, "threads": torch.get_num_threads()}
    report = {"setup": setup, "results": results, "ratios": ratios(results)}
    report["targets"] = {key: {"goal": goal, "met": report["ratios"][key] >= goal} for key, goal in TARGETS.items()}
    return publish(report, table(report), args.out)


if __name__ == "__main__":
    main(sys.argv[1:])

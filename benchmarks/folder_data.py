"""The data path of ``data=folder`` side by side in one run, on the same folder of real image files:
(a) mmcls's reference path: its ``CustomDataset`` over ``<root>/train`` (classes from the folders),
    ``LoadImageFromFile`` + ``Resize`` + RandomCrop/RandomFlip/Normalize per image, through mmcls's
    ``build_dataloader`` (each batch moved to the device), once per ``--workers`` value;
(b) mmclf's cached device path: the split decoded once (``image_cache.prepare``, not timed here),
    held on the device and batched by ``DeviceLoader`` with the same augmentation and batch size;
and the decode-once cache itself: its build time, its peak memory, and after how many epochs it
has paid for itself against (a).

    python benchmarks/folder_data.py                        # 3,000 generated JPEG/PNG images, about a minute
    python benchmarks/folder_data.py --root /datasets/pets  # your own folder (train/<class>/<image>, test/...)

Without ``--root`` the folder is generated in a temp dir first (mixed sizes and formats; not timed).
Each epoch's steady-state rate is its images after the first batch over the time from the first
batch to the last (DataLoader start-up left out, as every path's first batch); a path's img/s is the
median over every epoch of ``--rounds`` interleaved rounds. End-to-end img/s spreads the set-up
(scanning the folder / loading the cache onto the device) and every first batch over the epochs.
The cache is built afresh in every round (every image decoded again; the files themselves sit in
the OS page cache, as they do for (a)) in a child process, timed around ``prepare`` alone; the
child reports its own peak RSS, and a child that only imports gives the baseline. Break-even: the
epochs E at which cache + E x epoch(b) = E x epoch(a). The header gives the CPU time other
processes took during the run: other load skews every figure, the device loader's most.
Prints a table with ratios and writes JSON.
"""
import argparse
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from cache_build import build_in_child, cache_figures  # benchmarks/
from generated_folder import REPO, SEED, compose_data_cfg, write_folder
from mmcls.datasets import build_dataloader, build_dataset
from mmcls.utils import get_root_logger
from publish import publish  # benchmarks/: print the table, write the JSON

from mmclf.data import image_cache, image_folder
from mmclf.data.views import imagenet_style
from mmclf.training.fast.augment import parse_pipeline
from mmclf.training.fast.device_loader import DeviceLoader

TARGET = 5.0  # the target: the cached device path >= 5x mmcls's reference path, at 32 px, on this CPU

def cpu_seconds() -> tuple:
    """(CPU seconds every process on the machine has used since boot, those this process and its
    reaped children have used): their difference over a run is what other processes took meanwhile."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:9]]
    except OSError:
        return None, None
    busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    own = sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for field in ("ru_utime", "ru_stime"))
    return busy, own


def augmentation(image_size: int, norm: dict) -> list:
    """RandomCrop (padding 1/8 of the side), RandomFlip, Normalize and formatting: ``data=folder``'s own
    train pipeline below 64 px (image_cache.default_pipelines), the same steps above it (the device
    loader has no RandomResizedCrop, which the default takes there)."""
    if not imagenet_style(image_size):
        return image_cache.default_pipelines(image_size, norm)[0]
    return [{"type": "RandomCrop", "size": image_size, "padding": max(1, image_size // 8)},
            {"type": "RandomFlip", "flip_prob": 0.5, "direction": "horizontal"}, {"type": "Normalize", **norm},
            {"type": "ImageToTensor", "keys": ["img"]}, {"type": "ToTensor", "keys": ["gt_label"]},
            {"type": "Collect", "keys": ["img", "gt_label"]}]


def reference_pipeline(image_size: int, norm: dict) -> list:
    """mmcls reading the files: decode (mmcv, BGR), Resize to the cache's square, then the same steps;
    Normalize reverses the channels (to_rgb) so its output is the cache path's RGB, normalised alike."""
    steps = [{**step, "to_rgb": True} if step["type"] == "Normalize" else step
             for step in augmentation(image_size, norm)]
    return [{"type": "LoadImageFromFile"}, {"type": "Resize", "size": (image_size, image_size)}, *steps]


def time_epochs(loader, epochs: int, device: str) -> list:
    """Per epoch: steady-state img/s (after the first batch) and wall seconds (first batch included)."""
    out = []
    for _ in range(epochs):
        started = time.perf_counter()
        first, images = None, 0
        for batch in loader:
            batch["img"].to(device, non_blocking=True)  # the reference's batches still have to get there
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if first is None:
                first = time.perf_counter()
            else:
                images += len(batch["img"])
        end = time.perf_counter()
        out.append({"img_per_s": images / (end - first), "seconds": end - started})
    return out


def reference(root: Path, image_size: int, norm: dict, batch: int, workers: int, epochs: int, device: str) -> dict:
    """(a): mmcls's CustomDataset over the image files, its DataLoader with ``workers`` workers."""
    started = time.perf_counter()
    dataset = build_dataset({"type": "CustomDataset", "data_prefix": str(root / "train"),
                             "pipeline": reference_pipeline(image_size, norm)})
    loader = build_dataloader(dataset, batch, workers, dist=False, shuffle=True, seed=SEED,
                              pin_memory=device.startswith("cuda"), persistent_workers=workers > 0)
    setup = time.perf_counter() - started
    return {"setup_s": setup, "images": len(dataset), "epochs": time_epochs(loader, epochs, device)}


def device_path(manifest: dict, image_size: int, norm: dict, batch: int, epochs: int, device: str) -> dict:
    """(b): the decoded cache (built beforehand) loaded onto the device, batched by the DeviceLoader."""
    started = time.perf_counter()
    images, labels, _ = image_cache.load_split(manifest, "train")
    images = np.stack(images)  # the device loader takes one array, as from_dataset gives it
    loader = DeviceLoader(images, labels, parse_pipeline(augmentation(image_size, norm)), batch, device, SEED)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    setup = time.perf_counter() - started
    return {"setup_s": setup, "images": len(labels), "epochs": time_epochs(loader, epochs, device)}


def summarise(runs: list) -> dict:
    """One path over its rounds: median steady-state img/s over every epoch, each round's median, and
    end-to-end img/s (all its images over its set-up and every epoch's wall time), the median over rounds."""
    epochs = [epoch for run in runs for epoch in run["epochs"]]
    whole = [run["images"] * len(run["epochs"]) / (run["setup_s"] + sum(e["seconds"] for e in run["epochs"]))
             for run in runs]
    return {"img_per_s": statistics.median(e["img_per_s"] for e in epochs),
            "rounds": [statistics.median(e["img_per_s"] for e in run["epochs"]) for run in runs],
            "setup_s": statistics.median(run["setup_s"] for run in runs),
            "end_to_end_img_per_s": statistics.median(whole),
            "images": runs[0]["images"], "epochs_timed": len(epochs)}


def break_even(cache_s: float, reference: dict, device: dict) -> dict:
    """Epochs E after which building the cache has paid for itself, cache + E * N / rate(b) =
    E * N / rate(a): on end-to-end rates (set-up and first batches spread over the epochs: what a
    user waits for) and on steady-state rates; None: never (the reference is as fast)."""
    even = {}
    for key, rate in (("epochs", "end_to_end_img_per_s"), ("epochs_steady_state", "img_per_s")):
        saved = device["images"] / reference[rate] - device["images"] / device[rate]  # seconds per epoch
        even[key] = cache_s / saved if saved > 0 else None
    return even


def table(report: dict) -> str:
    setup, results, cache = report["setup"], report["results"], report["cache"]
    first, load = f"reference_w{setup['workers'][0]}", setup["load_average_1min"]
    others = "?" if setup["others_cpu_s"] is None else f"{setup['others_cpu_s']:.1f}"
    lines = [f"folder data path on {setup['device']}: {setup['images']} train images in {setup['root']} "
             f"({setup['classes']} classes, {setup['formats']}), {setup['image_size']} px, batch {setup['batch']}, "
             f"{setup['epochs']} epoch(s) x {setup['rounds']} round(s), medians",
             f"{setup['threads']} torch thread(s) on {setup['cpus']} CPUs; other processes took {others} CPU s "
             f"meanwhile (of {setup['wall_s']:.0f} s x {setup['cpus']}); load average {load['before']:.2f} before",
             f"{'path':46s} {'img/s':>10s}  {'ratio':>7s}  {'end-to-end img/s':>16s}  {'ratio':>7s}"]
    base, base_whole = results[first]["img_per_s"], results[first]["end_to_end_img_per_s"]
    for entry in results.values():
        whole = entry["end_to_end_img_per_s"]
        lines.append(f"{entry['label']:46s} {entry['img_per_s']:10.1f}  {entry['img_per_s'] / base:6.2f}x"
                     f"  {whole:16.1f}  {whole / base_whole:6.2f}x")
    lines.append(f"cache build (decode once, {cache['images_decoded']} images, all splits): {cache['seconds']:.2f} s "
                 f"({cache['images_decoded'] / cache['seconds']:.0f} img/s); peak RSS of the building child "
                 f"{cache['peak_rss_mib']:.1f} MiB (an import-only child: {cache['baseline_rss_mib']:.1f} MiB, "
                 f"+{cache['peak_rss_mib'] - cache['baseline_rss_mib']:.1f} MiB); {cache['npy_mib']:.2f} MiB on disk")
    even = {key: "never" if value is None else f"{value:.2f}" for key, value in report["break_even"].items()}
    lines.append(f"break-even vs (a) {setup['workers'][0]} workers, epochs after which the cache build has paid for "
                 f"itself: {even['epochs']} end to end, {even['epochs_steady_state']} on steady-state rates")
    ratio = report["ratio"]
    lines.append(f"(b)/(a): {ratio:.2f}x (target >= {TARGET:.0f}x at 32 px on this CPU: "
                 f"{'met' if report['target']['met'] else 'NOT met'})")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="your image folder (train/<class>/<image>, test/...); "
                        "default: one generated in a temp dir")
    parser.add_argument("--num-images", type=int, default=3000, help="generated train images (default 3,000)")
    parser.add_argument("--image-size", type=int, default=32, help="the cache's square side, px (default 32)")
    parser.add_argument("--batch", type=int, default=64, help="batch size of both paths (default 64)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 0],
                        help="DataLoader workers of (a), one row each; the first is the ratio's base (default 2 0)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per path per round (default 2)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads of this process (default: torch's own, "
                        "as mmclf runs); DataLoader workers take 1 each either way")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmarks" / "folder_data.json")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run the benchmark, print the table, write the JSON report and return it."""
    args = parse_args(argv)
    logging.getLogger("mmcv").setLevel(logging.WARNING)
    get_root_logger(log_level=logging.WARNING)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before, (busy_before, own_before), started = os.getloadavg()[0], cpu_seconds(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mmclf-folder-bench-") as tmp:
        tmp = Path(tmp)
        generated = args.root is None
        root = write_folder(tmp / "images", args.num_images) if generated else args.root.resolve()
        files = [path for path in (root / "train").rglob("*") if path.suffix.lower() in image_folder.IMAGE_SUFFIXES]
        if len(files) < 2 * args.batch:
            sys.exit(f"folder_data: {len(files)} train images; give at least twice --batch ({2 * args.batch})")
        data_cfg = compose_data_cfg(root, args.image_size, tmp / "cache")
        norm = data_cfg["img_norm_cfg"]
        baseline = build_in_child()
        builds, runs = [], {f"reference_w{workers}": [] for workers in args.workers}
        runs["device"] = []
        for round_index in range(args.rounds):
            # A fresh cache dir each round: every round decodes every image again (a cold cache).
            build = build_in_child({**data_cfg, "cache_dir": str(tmp / f"cache{round_index}")})
            builds.append(build)
            for workers in args.workers:
                runs[f"reference_w{workers}"].append(
                    reference(root, args.image_size, norm, args.batch, workers, args.epochs, device))
            runs["device"].append(
                device_path(build["manifest"], args.image_size, norm, args.batch, args.epochs, device))
        manifest = builds[0]["manifest"]
        npy_bytes = sum(Path(entry["cache"]).with_suffix(".npy").stat().st_size
                        for entry in manifest["splits"].values())
    results = {name: summarise(path_runs) for name, path_runs in runs.items()}
    for workers in args.workers:
        results[f"reference_w{workers}"]["label"] = f"(a) mmcls CustomDataset + DataLoader, {workers} workers"
    results["device"]["label"] = "(b) mmclf decoded cache + device loader"
    base = results[f"reference_w{args.workers[0]}"]
    cache = cache_figures(builds, baseline, npy_bytes)
    suffixes = sorted({path.suffix.lower() for path in files})
    setup = {"root": "generated" if generated else str(root), "images": results["device"]["images"],
             "classes": len(manifest["classes"]),
             "formats": "/".join(suffix.lstrip(".") for suffix in suffixes), "image_size": args.image_size,
             "batch": args.batch, "workers": args.workers, "rounds": args.rounds, "epochs": args.epochs,
             "device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
             "cpus": os.cpu_count(), "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
             "wall_s": time.perf_counter() - started}
    busy, own = cpu_seconds()
    # CPU time other processes took during the run (other load skews every figure, the device loader's most).
    setup["others_cpu_s"] = None if busy is None else max(0.0, (busy - busy_before) - (own - own_before))
    ratio = results["device"]["img_per_s"] / base["img_per_s"]
    report = {"setup": setup, "results": results, "ratio": ratio,
              "ratios": {name: entry["img_per_s"] / base["img_per_s"] for name, entry in results.items()},
              "cache": cache, "break_even": break_even(cache["seconds"], base, results["device"]),
              "target": {"goal": TARGET, "met": ratio >= TARGET}}
    return publish(report, table(report), args.out)


if __name__ == "__main__":
    main(sys.argv[1:])

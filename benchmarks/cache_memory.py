"""Memory of the decoded cache side by side in one run: the train and validation datasets of
``data=folder`` built as the train step builds them (``ImageFolderCache`` on the run's manifest, the
validation split held out of the train cache), in 1 process and in 2 processes at once (two ranks on a
node), each reading every image of both splits once (an epoch's reads); against the cache file's size.

    python benchmarks/cache_memory.py                       # 4,000 generated images at 224 px: a 750 MiB cache
    python benchmarks/cache_memory.py --root /datasets/pets --image-size 224

Each process reports, over what it held after its imports: its peak resident memory (VmHWM), and at
the end, while every process of the round is still alive, its resident memory (Rss), its proportional
share (Pss: a page mapped by two processes counts half in each) and its anonymous memory (the copies it
owns; the mapped cache is file-backed, in the page cache, shared). "Per extra rank" is the Pss the
2-process round holds beyond the 1-process one. Targets: a single process at most 1.1x the cache at its
peak; each extra rank at most 10% of the cache. Prints a table and writes JSON.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from generated_folder import REPO, child_env, compose_data_cfg, write_folder
from publish import publish  # benchmarks/: print the table, write the JSON

TARGETS = {"peak_over_cache": 1.1, "extra_rank_over_cache": 0.1}

# One "rank": imports, then the datasets as the train step builds them, every image read once; it prints
# "ready", waits for a line on stdin (every rank ready: the shared pages are mapped by all), then reports.
CHILD = """
import json, sys
import numpy as np
from mmclf.data.datasets import ImageFolderCache

def memory():
    with open("/proc/self/smaps_rollup") as rollup:
        fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup if line.endswith("kB\\n")}
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return {"rss": fields["Rss"], "pss": fields["Pss"], "anonymous": fields["Anonymous"], "peak": peak}

before = memory()
root, manifest, val_fraction = sys.argv[1], sys.argv[2], float(sys.argv[3])
splits = [ImageFolderCache(data_prefix=root, ann_file=manifest, pipeline=[], split=split, val_fraction=val_fraction,
                           split_seed=0) for split in ("train", "val")]
checksum = sum(int(info["img"].sum(dtype=np.uint64)) for dataset in splits for info in dataset.data_infos)
print("ready", flush=True)
sys.stdin.readline()
after = memory()
print(json.dumps({key: (after[key] - (before["rss"] if key == "peak" else before[key])) * 1024 for key in after}
                 | {"images": sum(len(dataset) for dataset in splits), "checksum": checksum}), flush=True)
"""


def round_of(processes: int, root: Path, manifest: Path, val_fraction: float) -> list[dict]:
    """``processes`` CHILDs at once; each one's report, taken while all are alive."""
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(manifest), str(val_fraction)], cwd=REPO,
                                 env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for _ in range(processes)]
    for child in children:
        if child.stdout.readline().strip() != "ready":
            sys.exit(f"cache_memory: a process failed: exit {child.wait()}")
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    reports = [json.loads(child.stdout.readline()) for child in children]
    for child in children:
        child.wait()
    return reports


def prepare(root: Path, image_size: int, cache_dir: Path, manifest: Path) -> tuple[int, int, float]:
    """Decode the folder into its cache (as prepare-data does); (the train cache's bytes, the stored size,
    val_fraction)."""
    from omegaconf import OmegaConf

    from mmclf.data import image_cache
    from mmclf.run.io import write_json_atomic

    data_cfg = compose_data_cfg(root, image_size, cache_dir)
    built = image_cache.prepare(OmegaConf.create(data_cfg))
    write_json_atomic(manifest, built)
    train_npy = Path(built["splits"]["train"]["cache"]).with_suffix(".npy")
    return train_npy.stat().st_size, built["stored_size"], data_cfg["val_fraction"]


def table(report: dict) -> str:
    mib = 2**20
    setup = report["setup"]
    lines = [f"cache memory: {setup['images']} train+val images trained at {setup['image_size']} px, stored at "
             f"{setup['stored_size']} px, train cache {report['cache_bytes'] / mib:,.0f} MiB",
             f"{'processes':>9s} {'peak/proc':>10s} {'rss/proc':>9s} {'pss total':>10s} {'anon/proc':>10s}  (MiB)"]
    for processes, reports in report["rounds"].items():
        lines.append(f"{processes:>9s} {max(r['peak'] for r in reports) / mib:10,.0f} "
                     f"{max(r['rss'] for r in reports) / mib:9,.0f} {sum(r['pss'] for r in reports) / mib:10,.0f} "
                     f"{max(r['anonymous'] for r in reports) / mib:10,.0f}")
    ratios = report["ratios"]
    lines.append(f"peak of one process / cache: {ratios['peak_over_cache']:.2f}x (target <= 1.1x); "
                 f"per extra rank / cache: {ratios['extra_rank_over_cache']:.2f}x (target <= 0.1x)")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="your own folder (default: generate one in a temp dir)")
    parser.add_argument("--num-images", type=int, default=4000, help="generated train images (default 4000)")
    parser.add_argument("--image-size", type=int, default=224, help="data.image_size, px (default 224)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmarks" / "cache_memory.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mmclf-cache-memory-") as tmp:
        root = args.root or write_folder(Path(tmp) / "images", args.num_images)
        manifest = Path(tmp) / "data.json"
        cache_bytes, stored_size, val_fraction = prepare(root, args.image_size, Path(tmp) / "cache", manifest)
        rounds = {str(n): round_of(n, root, manifest, val_fraction) for n in (1, 2)}
    one, two = (sum(r["pss"] for r in rounds[n]) for n in ("1", "2"))
    ratios = {"peak_over_cache": rounds["1"][0]["peak"] / cache_bytes,
              "extra_rank_over_cache": (two - one) / cache_bytes}
    report = {"setup": {"root": str(args.root or "generated"), "image_size": args.image_size,
                        "stored_size": stored_size, "images": rounds["1"][0]["images"]},
              "cache_bytes": cache_bytes, "rounds": rounds, "ratios": ratios,
              "targets": {key: {"goal": goal, "met": ratios[key] <= goal} for key, goal in TARGETS.items()}}
    return publish(report, table(report), args.out)


if __name__ == "__main__":
    main(sys.argv[1:])

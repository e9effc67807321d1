"""The decode-once cache of ``data=folder`` built in a fresh child interpreter, timed around
``image_cache.prepare`` alone, with the child's peak memory against a child that only imports:
folder_data.py's cache figures."""
import json
import statistics
import subprocess
import sys

from generated_folder import REPO, child_env  # benchmarks/

# A child that builds the cache (or, with no config, only imports what building needs) and prints its
# figures. Its peak memory is VmHWM of /proc/self/status: the peak resident set of this process image
# since exec, threads included. (ru_maxrss would not do: after fork + exec it keeps the high-water mark
# of the forked copy of this benchmark's process, which dwarfs the child's own.)
CHILD = """
import json, resource, sys, time
import numpy, PIL.Image, PIL.ImageOps
from omegaconf import OmegaConf
from mmclf.data import image_cache
report = {}
if len(sys.argv) > 1:
    started = time.perf_counter()
    report["manifest"] = image_cache.prepare(OmegaConf.create(json.loads(sys.argv[1])))
    report["seconds"] = time.perf_counter() - started
with open("/proc/self/status") as status:
    report["peak_rss_kib"] = int(next(line for line in status if line.startswith("VmHWM:")).split()[1])
report["ru_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(report))
"""


def build_in_child(data_cfg=None) -> dict:
    """The CHILD script in a fresh interpreter (building the cache ``data_cfg`` describes; with none, only
    importing); its JSON report."""
    args = [json.dumps(data_cfg)] if data_cfg is not None else []
    done = subprocess.run([sys.executable, "-c", CHILD, *args], cwd=REPO, env=child_env(), capture_output=True,
                          text=True)
    if done.returncode:
        sys.exit(f"folder_data: building the cache failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cache_figures(builds: list, baseline: dict, npy_bytes: int) -> dict:
    """The cache's figures over the rounds' ``builds`` (each a ``build_in_child`` report), against the
    ``baseline`` child's; ``npy_bytes``: the size of the cache's pixel files."""
    manifest = builds[0]["manifest"]
    return {"seconds": statistics.median(build["seconds"] for build in builds),
            "rounds_s": [build["seconds"] for build in builds],
            "images_decoded": sum(entry["images"] + entry["skipped_unreadable"]
                                  for entry in manifest["splits"].values()),
            "splits": {split: entry["images"] for split, entry in manifest["splits"].items()},
            "peak_rss_mib": max(build["peak_rss_kib"] for build in builds) / 1024,
            "baseline_rss_mib": baseline["peak_rss_kib"] / 1024, "npy_mib": npy_bytes / 2**20,
            "ru_maxrss_mib": {"build": max(build["ru_maxrss_kib"] for build in builds) / 1024,
                              "baseline": baseline["ru_maxrss_kib"] / 1024},
            "measured": "peak RSS: VmHWM (/proc/self/status) of a fresh child process (subprocess, python -c) "
                        "that imports numpy, Pillow, omegaconf and mmclf.data.image_cache and then runs "
                        "image_cache.prepare (decode threads included; the max over rounds), against a child that"
                        " only imports them. ru_maxrss_mib is the same children's "
                        "getrusage(RUSAGE_SELF).ru_maxrss, kept for contrast: Linux carries it over fork + exec, "
                        "so it shows this benchmark's own peak. seconds: prepare() alone (scan, decode, write), "
                        "imports excluded, median over rounds"}

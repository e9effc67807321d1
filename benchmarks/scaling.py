"""Data-parallel scaling side by side: the train step on 1 process and on N (torchrun), same recipe.

    python benchmarks/scaling.py                   # CPU-sized: 1 vs 2 gloo processes (about a minute)
    python benchmarks/scaling.py --full            # GPU: 50,000 synthetic 32x32 images, 1 vs every GPU
    python benchmarks/scaling.py --nproc 4 data.loader=device   # any mmclf override

Each run is mmclf's own train step (``mmclf.steps.run_step``), so N processes go through the same
torchrun launch a user's run does. ``data.samples_per_gpu`` is per process, so N processes train on
N times the images per iteration. Throughput is read from mmcv's json log (every iteration logged):
the median iteration time, first iteration of each epoch left out, gives steady-state img/s =
processes x batch / time. The end-to-end column is all images over the train step's wall time
(process start-up included: what a user waits for). Runs alternate in ``--rounds`` rounds; a
figure is the median over rounds. Scaling efficiency = img/s(N) / (N x img/s(1)).
Prints a table and writes JSON (``--out``).
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

import mmclf.schema  # noqa: F401  (registers the typed schemas before composing)
from mmclf.run.rundir import RunDir
from mmclf.steps import run_step

REPO = Path(__file__).resolve().parent.parent
SIZES = {
    "cpu": dict(num_train=1024, image_size=16, batch=64, epochs=2, device="cpu"),
    "full": dict(num_train=50_000, image_size=32, batch=256, epochs=2, device="cuda"),
}


def compose_run(size: dict, nproc: int, data_root: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[
            "data=synthetic", f"data.num_train={size['num_train']}", "data.num_test=64",
            f"data.image_size={size['image_size']}", f"data.samples_per_gpu={size['batch']}", f"data.root={data_root}",
            "schedule=quick", f"schedule.runner.max_epochs={size['epochs']}", "data.evaluation.interval=0",
            "runtime.log_config.interval=1", f"device={size['device']}", f"dist.nproc_per_node={nproc}",
            "resume=never", *overrides])


def measure(cfg, run_dir: RunDir, nproc: int) -> dict:
    """Train once into ``run_dir``; steady-state and end-to-end img/s."""
    run_step("prepare_data", cfg, run_dir)
    started = time.monotonic()
    run_step("train", cfg, run_dir)
    wall = time.monotonic() - started
    entries = [json.loads(line) for line in next(run_dir.work_dir.glob("*.log.json")).read_text().splitlines()[1:]]
    iteration_times = [e["time"] for e in entries if e.get("mode") == "train" and e["iter"] > 1]
    images_per_iteration = nproc * cfg.data.samples_per_gpu
    return {"img_per_s": images_per_iteration / statistics.median(iteration_times),
            "end_to_end_img_per_s": cfg.data.num_train * cfg.schedule.runner.max_epochs / wall}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="GPU size: 50,000 images of 32x32, batch 256 per GPU "
                        "(needs 2 GPUs or more)")
    parser.add_argument("--nproc", type=int, help="processes of the parallel run (default: 2 on CPU, every GPU)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num-train", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch", type=int, help="data.samples_per_gpu: images per process per iteration")
    parser.add_argument("--out", default="outputs/benchmarks/scaling.json")
    parser.add_argument("overrides", nargs="*", help="mmclf config overrides, e.g. data.loader=device")
    args = parser.parse_args(argv)
    size = dict(SIZES["full" if args.full else "cpu"])
    size.update({k: v for k, v in (("num_train", args.num_train), ("epochs", args.epochs), ("batch", args.batch)) if v})
    nproc = args.nproc or (2 if not args.full else _gpus())
    results = {1: [], nproc: []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for n in results:
                cfg = compose_run(size, n, f"{tmp}/data", args.overrides)
                results[n].append(measure(cfg, RunDir(f"{tmp}/run-{n}-{round_}"), n))
                print(f"round {round_ + 1}: {n} process(es): {results[n][-1]['img_per_s']:.1f} img/s", flush=True)
    table = {n: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for n, runs in results.items()}
    efficiency = table[nproc]["img_per_s"] / (nproc * table[1]["img_per_s"])
    print(f"\n{'processes':>9}  {'img/s':>9}  {'ratio':>6}  {'end-to-end img/s':>16}  {'ratio':>6}")
    one = table[1]
    for n, row in table.items():
        end_to_end = row["end_to_end_img_per_s"]
        print(f"{n:>9}  {row['img_per_s']:>9.1f}  {row['img_per_s'] / one['img_per_s']:>5.2f}x  "
              f"{end_to_end:>16.1f}  {end_to_end / one['end_to_end_img_per_s']:>5.2f}x")
    print(f"scaling efficiency on {nproc} processes: {efficiency:.2f} (1.00 = linear)")
    report = {"size": size, "nproc": nproc, "overrides": args.overrides, "scaling_efficiency": efficiency,
              "rounds": {str(n): r for n, r in results.items()}, "table": {str(n): row for n, row in table.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    return report


def _gpus() -> int:
    import torch

    if torch.cuda.device_count() < 2:
        sys.exit(f"--full compares 1 GPU with several; {torch.cuda.device_count()} visible here. Without GPUs, run "
                 "the CPU size (no --full); with one, --nproc N device=cpu compares gloo processes")
    return torch.cuda.device_count()


if __name__ == "__main__":
    main()

"""A 4-job local sweep one job at a time against 2 at once (Hydra's joblib launcher), side by side.

    python benchmarks/parallel_sweep.py                  # the quick start's digits recipe, 1 epoch, 1 round
    python benchmarks/parallel_sweep.py --rounds 3 --epochs 2

Each round runs the same sweep (``seed=1,2,3,4``) with the basic launcher and with
``hydra/launcher=joblib hydra.launcher.n_jobs=2``, each in a fresh sweep dir (the data prepared once
before), and prints the median
wall time of each and their ratio. On a GPU machine each parallel job takes a GPU of its own, so 2 jobs
at once need 2 GPUs; on a CPU the jobs share the cores.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUNCHERS = {"one at a time": [], "2 at once (joblib)": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}


def sweep_time(launcher: list[str], sweep_dir: Path, data_root: Path, epochs: int, seeds: str = "1,2,3,4") -> float:
    command = [sys.executable, "-m", "mmclf", "-m", "experiment=quickstart", f"schedule.runner.max_epochs={epochs}",
               f"seed={seeds}", f"data.root={data_root}", f"hydra.sweep.dir={sweep_dir}", *launcher]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (default 1)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per job (default 1)")
    args = parser.parse_args(argv)
    times = {name: [] for name in LAUNCHERS}
    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(tmp) / "data"
        sweep_time([], Path(tmp) / "warm-up", data_root, 1, seeds="0")  # prepares the data once, untimed
        for round_number in range(args.rounds):
            for name, launcher in LAUNCHERS.items():
                sweep_dir = Path(tmp) / f"{round_number}-{len(times[name])}-{len(launcher)}"
                times[name].append(sweep_time(launcher, sweep_dir, data_root, args.epochs))
    medians = {name: statistics.median(values) for name, values in times.items()}
    serial = medians["one at a time"]
    print(f"{'4-job sweep':<24}{'median s':>10}{'vs one at a time':>18}   ({args.rounds} round(s))")
    for name, median in medians.items():
        print(f"{name:<24}{median:>10.1f}{serial / median:>17.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

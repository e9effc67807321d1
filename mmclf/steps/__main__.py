"""One step in a process of its own: ``python -m mmclf.steps NAME --run-dir DIR [--config FILE]``.

What a Kubeflow Trainer node and each torchrun rank run (backend=local and a Kubeflow pod call the same
``run_step`` in process). The config is the run dir's ``config.yaml``: prepare_data records it,
resolved, with a Kubeflow run's parameters applied, so the config travels once and is validated
once, by the process that started the job. ``--config`` gives it for a run dir that has none yet.

In a torchrun worker (``RANK`` set) the process is tied to torchrun's life first (mmclf/steps/lifeline.py),
then joins the process group (NCCL on GPUs, gloo on the CPU) and runs the step's function as one rank:
the process that started torchrun records the step, not its ranks. A user error ends in one line and
exit status 2 (a refusal) or 1 (a failure); a rank's goes to the launcher's error folder
(``MMCLF_RANK_ERRORS``), and rank 0 prints it.
"""
import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from mmclf.steps.lifeline import AGENT_PID, die_with


def parse_args(argv=None) -> argparse.Namespace:
    from mmclf.steps import STEP_NAMES

    parser = argparse.ArgumentParser(prog="python -m mmclf.steps", description="run one mmclf step in a run dir")
    parser.add_argument("name", choices=STEP_NAMES, help="the step to run")
    parser.add_argument("--run-dir", required=True, help="the run directory")
    parser.add_argument("--config", help="the resolved config (YAML) for a run dir without config.yaml yet")
    return parser.parse_args(argv)


def load_config(run_dir, config=None):
    """The run's resolved config: ``config`` if given, else the run dir's config.yaml."""
    from omegaconf import OmegaConf

    from mmclf.errors import StepError
    from mmclf.run.rundir import RunDir

    path = Path(config) if config else RunDir(run_dir).config
    if not path.is_file():
        raise StepError(f"{path}: no such file; prepare_data records the run's config there: run it first "
                        f"(python -m mmclf.steps prepare_data --run-dir {run_dir} --config FILE), or pass --config")
    return OmegaConf.load(path)


def run_as_rank(name: str, run_dir: str) -> None:
    """One torchrun worker: join the process group, run the step's function on this rank, leave."""
    from mmclf.errors import MMClfError
    from mmclf.models.config import resolve_device
    from mmclf.run.rundir import RunDir
    from mmclf.steps import step_named

    try:
        cfg = load_config(run_dir)
        dist = _join_process_group(resolve_device(cfg.device))  # first: a rank that cannot join fails at once
        try:
            step_named(name).function(cfg, RunDir(run_dir))
        finally:
            dist.destroy_process_group()
    except MMClfError as err:
        _report(err)


def _join_process_group(device: str):
    import torch
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return dist


def _report(err) -> None:
    """A rank's user error: into the launcher's error folder, and one line on the console from rank 0
    (the others' are most often the same line)."""
    from mmclf.steps.launch import RANK_ERRORS

    rank = os.environ["RANK"]
    if RANK_ERRORS in os.environ:
        Path(os.environ[RANK_ERRORS], f"rank-{rank}.txt").write_text(str(err))
    if rank == "0":
        print(f"mmclf: error: {err}", file=sys.stderr)
    sys.exit(err.exit_status)


def main(argv=None) -> None:
    from mmclf.errors import one_line_errors
    from mmclf.steps import run_step
    from mmclf.training.world import is_rank_zero, is_worker

    args = parse_args(argv)
    # A process of its own starts with no logging config; without one, the step's progress is silent.
    logging.basicConfig(level=logging.INFO if is_rank_zero() else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if is_worker():
        run_as_rank(args.name, args.run_dir)
        return
    with one_line_errors():
        run_step(args.name, load_config(args.run_dir, args.config), args.run_dir)


if __name__ == "__main__":
    if "RANK" in os.environ:  # a torchrun worker: die with torchrun, whatever happens next
        die_with(int(os.environ.get(AGENT_PID, os.getppid())), signal.SIGKILL)
    main()

"""Refusals that come before anything in a run dir changes: a run dir in use by another process,
or one holding checkpoints of another recipe (model, data, schedule or seed) or of another
number of processes.

Checked twice: by the validation callback for a single run, before Hydra writes into the run dir,
and by the task inside the run-dir lock (sweep jobs, whose folders Hydra names only later).
"""
from omegaconf import DictConfig

from mmclf.run.lock import refuse_if_busy
from mmclf.run.rundir import RunDir


def refuse_foreign_run(cfg: DictConfig, run_dir: RunDir) -> None:
    """Raise RunDirRefused if ``run_dir`` holds checkpoints that ``cfg`` would not resume."""
    if cfg.resume != "auto" or not any(run_dir.work_dir.glob("epoch_*.pth")):
        return
    from mmclf.models.config import weights_fingerprint
    from mmclf.training.checkpoints import resume_checkpoint  # torch: only when there are checkpoints to read
    from mmclf.training.world import world_size

    resume_checkpoint("auto", run_dir.work_dir, weights_fingerprint(cfg), cfg.schedule.runner.max_epochs,
                      world_size(cfg))


def check_run_dir(cfg: DictConfig, run_dir) -> None:
    run_dir = RunDir(run_dir)
    refuse_if_busy(run_dir)
    refuse_foreign_run(cfg, run_dir)

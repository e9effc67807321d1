"""The task Hydra runs for each job: validate, run the configured backend, record the job, and
turn failures into the job record, the sweep's policy and one line with exit status 2; a stop
(Ctrl-C, SIGTERM) into the record ``stopped`` and one line."""
import contextlib
import errno
import logging
import math
import os
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from mmclf import summary
from mmclf.errors import JobStopped, MMClfError, StepFailed, exit_stopped, exit_with, stop_on_signals
from mmclf.reports import jobs
from mmclf.run.io import remove_stale_temps
from mmclf.run.lock import run_dir_lock
from mmclf.run.rundir import RunDir
from mmclf.rundir_checks import refuse_foreign_run
from mmclf.validate import ValidateBeforeRun, backend_of, validate

log = logging.getLogger("mmclf")
SINGLE_RUN = jobs.JobContext()  # a run outside a sweep, and outside Hydra (tests, notebooks)


class DiskFull(StepFailed):
    """No space left (or quota exceeded) while writing a file."""


def hydra_job() -> tuple[Path, jobs.JobContext]:
    """This job's run dir and context, from Hydra's runtime config (inside ``@hydra.main`` only)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra = HydraConfig.get()
    in_sweep = hydra.mode == RunMode.MULTIRUN
    context = jobs.JobContext(overrides=tuple(hydra.overrides.task), number=hydra.job.num if in_sweep else None,
                              sweep_dir=Path(hydra.sweep.dir) if in_sweep else None,
                              parallel=in_sweep and jobs.parallel_launcher(hydra.launcher))
    return Path(hydra.runtime.output_dir), context


def run(cfg: DictConfig, run_dir, job: jobs.JobContext = SINGLE_RUN, validated: bool = False) -> Optional[float]:
    """Validate, run the configured backend and return the objective ``cfg.optimized_metric``.

    One job per run dir at a time (a lock). A run dir holding another recipe's checkpoints, or
    in use by another process, is refused before anything in it changes; any other failure is
    recorded in job.json, inside the lock. None when no run finished here (backend=kfp
    compiling, or submitting without waiting)."""
    run_dir = RunDir(run_dir)
    try:
        if not validated:  # Hydra's callback validated this very config (one run, not a sweep's job)
            validate(cfg)
    except MMClfError as err:
        if not run_dir.job_record.exists():  # a sweep job's own values: say why in its record
            _record_failure(run_dir, cfg, err)
        raise
    if cfg.logger.mlflow is not None and cfg.logger.mlflow.experiment is None:
        cfg.logger.mlflow.experiment = job.experiment  # a sweep's jobs share one MLflow experiment
    with disk_full_in_one_line(), run_dir_lock(run_dir):
        refuse_foreign_run(cfg, run_dir)
        try:
            with disk_full_in_one_line():
                objective = _run_locked(cfg, run_dir, job)
        except (Exception, JobStopped) as err:
            _record_failure(run_dir, cfg, err)
            raise
    if objective is not None:  # the validation figure chosen on, then the test split's same figure
        test_name = "test_" + cfg.optimized_metric.removeprefix("val_")
        test_value = jobs.read_record(run_dir).get("metrics", {}).get(test_name)
        tested = f"  {test_name}: {test_value:.2f}" if isinstance(test_value, (int, float)) else ""
        print(f"{cfg.optimized_metric}: {objective:.2f}{tested}  run dir: {run_dir}")
    return objective


def finished_metrics(cfg: DictConfig, run_dir) -> Optional[dict]:
    """The metrics of an earlier successful run of this same job in ``run_dir``, if any, whose outputs
    are intact: a run whose final checkpoint is damaged is not finished, and runs again."""
    record = jobs.read_record(run_dir)
    if cfg.resume == "never" or record.get("status") != "succeeded":
        return None
    return record.get("metrics") if jobs.same_job(cfg, record) and _outputs_intact(cfg, run_dir, record) else None


def _outputs_intact(cfg: DictConfig, run_dir, record: dict) -> bool:
    """The steps' own checks of their outputs (the final checkpoint), where the job ran here; a job run
    elsewhere (``remote``: on a cluster) left its checkpoints there."""
    if record.get("remote"):
        return True
    from mmclf.steps import STEPS  # the train step's check reads the checkpoint (torch): only for a finished job

    return all(step.module.outputs_intact(cfg, RunDir(run_dir)) for step in STEPS if step.checks_outputs)


def _run_locked(cfg: DictConfig, run_dir: RunDir, job: jobs.JobContext) -> Optional[float]:
    """The job, in the run dir whose lock this process holds: skipped when it already finished."""
    remove_stale_temps(run_dir.path)  # of a write killed mid-file
    backend = backend_of(cfg)
    if not backend.records_job(cfg):
        backend.run(cfg, run_dir, job)
        return None
    metrics = finished_metrics(cfg, run_dir)
    if metrics is not None:
        log.info("%s already holds a finished run of this config; not running it again", run_dir)
    else:
        metrics = backend.run(cfg, run_dir, job)
    remote = backend.remote_run(run_dir)
    if metrics is None:  # compiled, or submitted without waiting: the result comes later, elsewhere
        jobs.write_record(run_dir, cfg, "pending", remote=remote)
        return None
    objective = jobs.objective(cfg, metrics)
    jobs.write_record(run_dir, cfg, "succeeded", remote=remote, objective=objective, metrics=jobs.scalars(metrics))
    return objective


@contextlib.contextmanager
def disk_full_in_one_line():
    """A full disk (or quota) anywhere inside, said in one line naming the path."""
    try:
        yield
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFull(f"{err.filename or 'a file'}: no space left on that volume ({err.strerror}). Files "
                       "already written are intact (each is written whole or not at all); free space and run the "
                       "same command again to continue") from None


def _record_failure(run_dir: RunDir, cfg: DictConfig, err: Exception) -> None:
    """job.json for a failed job; never a second error on top of the first (a full disk, say)."""
    status = getattr(err, "job_status", "failed")  # ResultNotHere: finished, result elsewhere
    try:
        jobs.write_record(run_dir, cfg, status, remote=backend_of(cfg).remote_run(run_dir),
                          error=f"{type(err).__name__}: {err}")
    except OSError as record_err:
        log.warning("could not record the failure in %s (%s)", run_dir.job_record, record_err)


def traceback_to_log_file(err: Exception) -> str:
    """Write an unexpected error's traceback to the job's own log file (Hydra's), not to the sweep's
    output, where one line says what failed; the file's path."""
    files = [handler for handler in logging.getLogger().handlers
             if isinstance(handler, logging.FileHandler) and handler.baseFilename != os.devnull]
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "the job failed:", (), (type(err), err,
                                                                                         err.__traceback__))
    for handler in files:
        handler.handle(record)
    return files[0].baseFilename if files else "no log file: Hydra's job logging is off"


def run_job(cfg: DictConfig, run_dir, job: jobs.JobContext) -> Optional[float]:
    """``run``, and when it fails (``run`` recorded it): go on with the sweep (a NaN objective),
    or stop: one line and exit status 2 for a user error, the traceback for anything else. A
    signal stops the job and the sweep: one line, exit status 128 + the signal's number."""
    try:
        with stop_on_signals():
            return run(cfg, run_dir, job, validated=ValidateBeforeRun.validated_run and not job.in_sweep)
    except JobStopped as stop:
        if job.in_sweep:
            summary.write_summary(job.sweep_dir)
        exit_stopped(stop, f"{run_dir} keeps what finished")
    except Exception as err:
        if job.in_sweep:
            if not cfg.sweep.fail_fast:
                where = "" if isinstance(err, MMClfError) else f" (traceback in {traceback_to_log_file(err)})"
                log.error("job %s failed and the sweep goes on (sweep.fail_fast=true stops it): %s%s",
                          job.number, err, where)
                return math.nan  # Optuna records a NaN objective as a failed trial
            summary.write_summary(job.sweep_dir)  # Hydra's multirun-end callback will not run
        if isinstance(err, MMClfError):
            exit_with(err)
        raise

"""The backend contract: what the core calls, without knowing which backend it is.

``cfg.backend._target_`` names the class; the core makes one with no arguments and calls:

- ``check(cfg)`` before Hydra creates any folder: raise ``mmclf.errors.ConfigError`` naming the
  ``backend.*`` key (or the run option) this backend cannot run with;
- ``returns_objective(cfg)``: whether ``run`` gives metrics back, so a searching sweeper (Optuna)
  gets each job's objective; a sweep that needs one is refused up front otherwise;
- ``run(cfg, run_dir, job)``: run the steps (``mmclf.steps.STEPS``) for ``cfg`` into ``run_dir``
  and return the metrics dict, or None when no run finished here (compiled, or submitted without
  waiting). ``job`` is Hydra's word on this job (overrides, sweep), handed over, never looked up;
- ``remote_run(run_dir)``: where the job runs elsewhere, for job.json and sweep summaries
  (``{"kind": ..., "state": ..., "run_id": ..., "url": ...}``), or ``{}``;
- ``records_job(cfg)``: whether ``run`` is a job job.json records; False for a mode that only asks
  questions (a preflight), which leaves no record to mistake for a run.

Each backend also registers its typed options as ``backend/<name>_schema`` in Hydra's
ConfigStore when its module is imported (the ``mmclf.backends`` entry points in pyproject.toml).
"""
from typing import Optional, Protocol, runtime_checkable

from omegaconf import DictConfig

from mmclf.reports.jobs import JobContext
from mmclf.run.rundir import RunDir


@runtime_checkable
class Backend(Protocol):
    def check(self, cfg: DictConfig) -> None: ...

    def returns_objective(self, cfg: DictConfig) -> bool: ...

    def run(self, cfg: DictConfig, run_dir: RunDir, job: JobContext) -> Optional[dict]: ...

    def remote_run(self, run_dir: RunDir) -> dict: ...

    def records_job(self, cfg: DictConfig) -> bool: ...

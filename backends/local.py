"""backend=local: the steps in order, in this process, in Hydra's run dir."""
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from mmclf.jobs import JobContext
from mmclf.rundir import RunDir
from mmclf.steps import run_all
from mmclf.validate import check_runs_here


@dataclass
class LocalBackendConfig:
    _target_: str = "backends.local.LocalBackend"


ConfigStore.instance().store(group="backend", name="local_schema", node=LocalBackendConfig)


class LocalBackend:
    def check(self, cfg: DictConfig) -> None:
        check_runs_here(cfg)

    def returns_objective(self, cfg: DictConfig) -> bool:
        return True

    def run(self, cfg: DictConfig, run_dir: RunDir, job: JobContext) -> dict:
        return run_all(cfg, run_dir)

    def remote_run(self, run_dir: RunDir) -> dict:
        return {}

    def records_job(self, cfg: DictConfig) -> bool:
        return True

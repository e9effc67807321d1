"""backend=local: the steps in order, in this process, in Hydra's run dir."""
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from mmclf.models.config import resolve_device
from mmclf.reports.jobs import JobContext
from mmclf.run.rundir import RunDir
from mmclf.run.sweep_gpus import one_gpu_for
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
        if not (job.parallel and resolve_device(cfg.device) == "cuda"):
            return run_all(cfg, run_dir)
        import torch

        with one_gpu_for(job.sweep_dir, job.number, torch.cuda.device_count()) as gpu:
            torch.cuda.set_device(gpu)
            return run_all(cfg, run_dir)

    def remote_run(self, run_dir: RunDir) -> dict:
        return {}

    def records_job(self, cfg: DictConfig) -> bool:
        return True

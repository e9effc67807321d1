"""Names of a job on Kubeflow: the run's folder on the volume, its display name, the sweep's experiment."""
import re
import time
from typing import Optional

from omegaconf import DictConfig

from mmclf.jobs import JobContext


def sweep_experiment(job: JobContext) -> Optional[str]:
    """In a multirun, a KFP experiment name for the whole sweep: ``mmclf-<sweep dir's last two parts>``."""
    if not job.in_sweep:
        return None
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(["mmclf", *job.sweep_dir.parts[-2:]]))


def run_names(cfg: DictConfig, job: JobContext) -> tuple[str, str]:
    """(name, display name): ``mmclf-resnet18-cifar10-<time>[-<job>]`` and the same plus the job's overrides.

    The name, safe in a path, names the run's folder on the volume; the display name is the KFP run's.
    """
    backbone = cfg.model.get("backbone") or {}
    model = f"{backbone.get('type', '').split('_')[0]}{backbone.get('depth', '')}" or cfg.model.type
    name = f"mmclf-{model}-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if job.in_sweep:
        name += f"-{job.number}"
    name = re.sub(r"[^a-z0-9-]+", "-", name.lower())
    # backend.* and hydra.* overrides say where and how a job ran, not what it trained.
    shown = [o for o in job.overrides if not o.lstrip("+~").startswith(("backend.", "backend=", "hydra."))]
    return name, " ".join([name, *shown])

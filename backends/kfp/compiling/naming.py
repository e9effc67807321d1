"""Names of a job on Kubeflow: the run's name (its folder on the volume: volume/layout.py) and display
name (the experiment is the job's own, ``JobContext.experiment``, shared with MLflow).

Imported by the pods too (pod.py): no kfp here.
"""
import re
import time

from omegaconf import DictConfig

from mmclf.reports.jobs import JobContext

# The pipeline parameter create-volume's StorageClass comes from when it was not known when compiling.
STORAGE_CLASS_PARAMETER = "storage_class"


def volume_description(volume: DictConfig) -> str:
    """Which claim holds a run's folder, in words for messages."""
    if volume.mode == "existing":
        return f"claim {volume.claim_name}"
    if volume.mode == "workspace":
        return "the run's KFP workspace"
    return "the claim create-volume made for the run (its output `name` in the KFP UI)"


def model_name(cfg: DictConfig) -> str:
    """``resnet18`` for mmcls's ResNet_CIFAR of depth 18; a zoo model's config name (``resnet50_8xb32_in1k``);
    the model's type otherwise."""
    if cfg.model.get("config"):
        return cfg.model.config.split("/")[-1]
    backbone = cfg.model.get("backbone") or {}
    return f"{backbone.get('type', '').split('_')[0]}{backbone.get('depth', '')}".lower() or cfg.model.type


def run_names(cfg: DictConfig, job: JobContext) -> tuple[str, str]:
    """(name, display name): ``mmclf-resnet18-cifar10-<time>[-<job>]`` and the same plus the job's overrides.

    The name, safe in a path, begins the run's folder on the volume; the display name is the KFP run's.
    """
    name = f"mmclf-{model_name(cfg)}-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if job.in_sweep:
        name += f"-{job.number}"
    name = re.sub(r"[^a-z0-9-]+", "-", name.lower())
    # backend.* and hydra.* overrides say where and how a job ran, not what it trained.
    shown = [o for o in job.overrides if not o.lstrip("+~").startswith(("backend.", "backend=", "hydra."))]
    return name, " ".join([name, *shown])

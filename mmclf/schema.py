"""Typed schemas for mmclf's own run options, registered in Hydra's ConfigStore.

Model, data, schedule and runtime keep mmcls's own (untyped) keys; the run options below are
typed, so a wrong type or an unknown key fails at composition, before any work starts. Choices
are ``StrEnum``s: they compose to members that are also plain strings.

Each backend registers its own schema (``backend/<name>_schema``). The core does not import
backends: it finds them through the ``mmclf.backends`` entry points that pyproject.toml declares,
and importing each one registers its schema.
"""
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

BACKEND_ENTRY_POINTS = "mmclf.backends"


class Device(StrEnum):
    auto = "auto"  # cuda when a GPU is visible, else cpu
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class DistConfig:
    """Data-parallel training of the train step (mmclf/steps/launch.py): torchrun's processes per node and nodes."""

    # auto: one process per visible GPU (1 without a GPU); or a number (several gloo processes on the CPU)
    nproc_per_node: Any = "auto"
    # more than 1 only where something starts every node (backend=kfp backend.distributed=trainjob)
    nnodes: int = 1


@dataclass
class SweepConfig:
    # A failing job is recorded as failed and the sweep goes on; true stops the sweep at it.
    fail_fast: bool = False


@dataclass
class TensorboardConfig:
    log_dir: str = "tensorboard"  # event files, inside the run dir


@dataclass
class MlflowConfig:
    # null: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the folder the command runs in
    tracking_uri: Optional[str] = None
    # null: "mmclf" for a single run, "mmclf-<date>-<time>" (the sweep dir) for a sweep's jobs
    experiment: Optional[str] = None
    # A name in MLflow's model registry: the run's exported model becomes a new version of it when the
    # run passes the release gate (min_metric); null: the model is logged with the run, not registered.
    registered_model: Optional[str] = None


@dataclass
class LoggerConfig:
    """Where a run reports as it trains, besides mmcv's text log (always on): conf/logger/."""

    tensorboard: Optional[TensorboardConfig] = None
    mlflow: Optional[MlflowConfig] = None


@dataclass
class MMClfConfig:
    device: Device = Device.auto
    seed: int = 0
    deterministic: bool = False
    # Key of metrics.json returned to Hydra as the objective (sweepers maximise it): a validation
    # figure, so that nothing is chosen on the test split.
    optimized_metric: str = "val_accuracy_top-1"
    # The release gate, one for everything that puts a model to use: registering it in MLflow
    # (logger.mlflow.registered_model) and serving it (backend.serve, whose min_metric follows this one)
    # happen only when optimized_metric reaches it. null: always.
    min_metric: Optional[float] = None
    # Re-running into a run dir: auto = continue from its newest valid checkpoint and skip
    # finished steps; never = start again from scratch; or the path of a checkpoint to resume.
    resume: str = "auto"
    dist: DistConfig = field(default_factory=DistConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    backend: Any = MISSING
    model: Any = MISSING
    data: Any = MISSING
    schedule: Any = MISSING
    runtime: Any = MISSING


def register_configs() -> None:
    """The core schema, then every installed backend's (each registers its own when imported)."""
    ConfigStore.instance().store(name="mmclf_schema", node=MMClfConfig)
    for backend in entry_points(group=BACKEND_ENTRY_POINTS):
        backend.load()


register_configs()

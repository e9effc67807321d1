"""Typed schemas for mmclf's own options, registered in Hydra's ConfigStore.

Model, data, schedule and runtime keep mmcls's own (untyped) keys; the run options and the
backend options below are typed, so a wrong type or an unknown key fails at composition,
before any work starts.
"""
from dataclasses import dataclass
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Device(str, Enum):
    auto = "auto"  # cuda when a GPU is visible, else cpu
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class LocalBackendConfig:
    _target_: str = "backends.local.LocalBackend"


@dataclass
class MMClfConfig:
    device: Device = Device.auto
    seed: int = 0
    deterministic: bool = False
    # Key of metrics.json returned to Hydra as the objective (sweepers maximise it).
    optimized_metric: str = "accuracy_top-1"
    backend: Any = MISSING
    model: Any = MISSING
    data: Any = MISSING
    schedule: Any = MISSING
    runtime: Any = MISSING


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="mmclf_schema", node=MMClfConfig)
    cs.store(group="backend", name="local_schema", node=LocalBackendConfig)


register_configs()

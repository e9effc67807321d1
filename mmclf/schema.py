"""Typed schemas for mmclf's own options, registered in Hydra's ConfigStore.

Model, data, schedule and runtime keep mmcls's own (untyped) keys; the run options and the
backend options below are typed, so a wrong type or an unknown key fails at composition,
before any work starts.
"""
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


def plain(value):
    """The value of an Enum member (typed options compose to members); anything else as it is."""
    return value.value if isinstance(value, Enum) else value


class Device(str, Enum):
    auto = "auto"  # cuda when a GPU is visible, else cpu
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class LocalBackendConfig:
    _target_: str = "backends.local.LocalBackend"


class KfpMode(str, Enum):
    compile = "compile"  # write pipeline.yaml (+ graph) into the run dir
    submit = "submit"  # compile, then create a run on a KFP API server
    local = "local"  # execute the pipeline here through kfp.local


class ComponentStyle(str, Enum):
    python = "python"  # Python-function components (need the kfp SDK in the image)
    container = "container"  # custom container components running `python -m mmclf.step NAME`


class VolumeMode(str, Enum):
    create = "create"  # kfp-kubernetes CreatePVC per run
    existing = "existing"  # mount a claim made by hand (claim_name)
    workspace = "workspace"  # KFP >= 2.15 pipeline workspace


class PullPolicy(str, Enum):
    Always = "Always"
    IfNotPresent = "IfNotPresent"
    Never = "Never"


@dataclass
class VolumeConfig:
    mode: VolumeMode = VolumeMode.create
    claim_name: Optional[str] = None  # required for mode=existing
    size: str = "20Gi"
    storage_class: Optional[str] = None
    access_modes: list[str] = field(default_factory=lambda: ["ReadWriteMany"])
    mount_path: str = "/mnt/mmclf"
    pvc_name_suffix: str = "-mmclf"  # mode=create: the claim is named <uuid><suffix>
    delete_after: bool = False


@dataclass
class ResourcesConfig:
    """Requested by the train and test tasks."""

    accelerator_type: Optional[str] = "nvidia.com/gpu"
    accelerator_count: int = 1
    cpu: Optional[str] = None
    memory: Optional[str] = None


@dataclass
class KfpBackendConfig:
    _target_: str = "backends.kubeflow.KfpBackend"
    mode: KfpMode = KfpMode.compile
    component: ComponentStyle = ComponentStyle.python
    image: str = "mmclf:latest"
    image_pull_policy: PullPolicy = PullPolicy.IfNotPresent
    retries: int = 0
    timeout_s: Optional[int] = None  # per task; null = no limit
    host: Optional[str] = None  # null: $KF_PIPELINES_ENDPOINT
    namespace: Optional[str] = None
    experiment: Optional[str] = None  # null: "mmclf"
    token_env: Optional[str] = None  # name of the env var holding a bearer token
    wait: bool = False
    poll_interval_s: float = 10.0
    volume: VolumeConfig = field(default_factory=VolumeConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)


@dataclass
class SweepConfig:
    # A failing job is recorded as failed and the sweep goes on; true stops the sweep at it.
    fail_fast: bool = False


@dataclass
class MMClfConfig:
    device: Device = Device.auto
    seed: int = 0
    deterministic: bool = False
    # Key of metrics.json returned to Hydra as the objective (sweepers maximise it).
    optimized_metric: str = "accuracy_top-1"
    # Re-running into a run dir: auto = continue from its newest valid checkpoint and skip
    # finished steps; never = start again from scratch; or the path of a checkpoint to resume.
    resume: str = "auto"
    sweep: SweepConfig = field(default_factory=SweepConfig)
    backend: Any = MISSING
    model: Any = MISSING
    data: Any = MISSING
    schedule: Any = MISSING
    runtime: Any = MISSING


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="mmclf_schema", node=MMClfConfig)
    cs.store(group="backend", name="local_schema", node=LocalBackendConfig)
    cs.store(group="backend", name="kfp_schema", node=KfpBackendConfig)


register_configs()

"""Typed ``backend.*`` options of backend=kfp, registered in Hydra's ConfigStore on import.

conf/backend/kfp.yaml extends ``kfp_schema``: a wrong type or an unknown key is refused at
composition, before any work starts. Value checks that need more than a type are in checks.py.
"""
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Optional

from hydra.core.config_store import ConfigStore


class KfpMode(StrEnum):
    compile = "compile"  # write pipeline.yaml (+ graph) into the run dir
    submit = "submit"  # compile, then create a run on a KFP API server
    local = "local"  # execute the pipeline here through kfp.local


class ComponentStyle(StrEnum):
    python = "python"  # Python-function components (need the kfp SDK in the image)
    container = "container"  # custom container components running `python -m backends.kfp.pod NAME`


class VolumeMode(StrEnum):
    create = "create"  # kfp-kubernetes CreatePVC per run
    existing = "existing"  # mount a claim made by hand (claim_name)
    workspace = "workspace"  # KFP >= 2.15 pipeline workspace


class PullPolicy(StrEnum):
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
    """Requested by the accelerated step tasks (train and test)."""

    accelerator_type: Optional[str] = "nvidia.com/gpu"
    accelerator_count: int = 1
    cpu: Optional[str] = None
    memory: Optional[str] = None


@dataclass
class KfpBackendConfig:
    _target_: str = "backends.kfp.backend.KfpBackend"
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


ConfigStore.instance().store(group="backend", name="kfp_schema", node=KfpBackendConfig)

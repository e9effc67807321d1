"""Typed ``backend.*`` options of backend=kfp, registered in Hydra's ConfigStore on import.

conf/backend/kfp.yaml extends ``kfp_schema``: a wrong type or an unknown key is refused at
composition, before any work starts. Value checks that need more than a type are in checks.py.
"""
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from omegaconf import OmegaConf


class KfpMode(StrEnum):
    compile = "compile"  # write pipeline.yaml (+ graph) into the run dir
    submit = "submit"  # compile, then create a run on a KFP API server
    local = "local"  # execute the pipeline here through kfp.local
    check = "check"  # preflight: ask the cluster what would make a run stall
    clean = "clean"  # list (and with clean.delete, delete) the claims and TrainJobs earlier runs left


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


class TolerationOperator(StrEnum):
    Equal = "Equal"
    Exists = "Exists"


class Distributed(StrEnum):
    pod = "pod"  # torchrun inside the one train pod: dist.nproc_per_node processes, one node
    trainjob = "trainjob"  # the train task creates a Kubeflow Trainer TrainJob of dist.nnodes nodes and waits


class RuntimeKind(StrEnum):
    ClusterTrainingRuntime = "ClusterTrainingRuntime"  # cluster-wide (Kubeflow Trainer installs torch-distributed)
    TrainingRuntime = "TrainingRuntime"  # in the namespace of the runs


class TaintEffect(StrEnum):
    NoSchedule = "NoSchedule"
    PreferNoSchedule = "PreferNoSchedule"
    NoExecute = "NoExecute"


@dataclass
class VolumeConfig:
    mode: VolumeMode = VolumeMode.create
    claim_name: Optional[str] = None  # required for mode=existing
    size: str = "20Gi"
    storage_class: Optional[str] = None  # null: the cluster's default class (cluster/kube.py)
    access_modes: Optional[list[str]] = None  # null: what the run needs (volume/layout.py: claim_access_modes)
    mount_path: str = "/mnt/mmclf"
    pvc_name_suffix: str = "-mmclf"  # mode=create: the claim is named <uuid><suffix>
    delete_after: bool = False
    make_writable: bool = True  # a first task, as root, makes the volume's root writable for run_as_user


@dataclass
class ResourcesConfig:
    """Requested by the accelerated step tasks (train and test)."""

    accelerator_type: Optional[str] = "nvidia.com/gpu"
    accelerator_count: int = 1
    cpu: Optional[str] = None
    memory: Optional[str] = None
    # A memory-backed /dev/shm for train and test (and every TrainJob node): PyTorch's DataLoader
    # workers and NCCL use shared memory, and a container's own /dev/shm is 64Mi. null: none.
    shm_size: Optional[str] = "8Gi"


@dataclass
class Toleration:
    """A Kubernetes toleration, in Kubernetes' own field names."""

    key: Optional[str] = None  # null: every taint key (operator Exists)
    operator: TolerationOperator = TolerationOperator.Equal
    value: Optional[str] = None
    effect: Optional[TaintEffect] = None  # null: every effect
    tolerationSeconds: Optional[int] = None  # NoExecute only (camelCase: Kubernetes' own name)


@dataclass
class TrainJobConfig:
    """backend.distributed=trainjob: the Kubeflow Trainer TrainJob the train task creates (trainjob/manifest.py)."""

    runtime: str = "torch-distributed"  # the runtime it references (Kubeflow Trainer ships torch-distributed)
    runtime_kind: RuntimeKind = RuntimeKind.ClusterTrainingRuntime
    poll_interval_s: float = 10.0  # seconds between status reads while it runs
    start_timeout_s: float = 600.0  # no node pod running by then: the train task fails, quoting the cluster's reason
    # The service account KFP runs the train task's pod as (standalone KFP: pipeline-runner; a Kubeflow
    # profile namespace: default-editor): the preflight asks whether it may create TrainJobs.
    service_account: str = "pipeline-runner"


@dataclass
class ServeQuantities:
    cpu: Optional[str] = None  # e.g. "1" or 500m; null: none
    memory: Optional[str] = None  # e.g. 2Gi; null: none


@dataclass
class ServeResourcesConfig:
    """The predictor container's requests and limits (the Triton runtime's own: 1 CPU, 2Gi)."""

    requests: ServeQuantities = field(default_factory=lambda: ServeQuantities("1", "2Gi"))
    limits: ServeQuantities = field(default_factory=lambda: ServeQuantities("1", "2Gi"))
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_count: int = 0  # as a limit (extended resources cannot be overcommitted)


@dataclass
class ServeConfig:
    """backend.serve: a KServe InferenceService of the run's ONNX model, after produce-metrics (serving/manifest.py)."""

    enabled: bool = False
    min_metric: Optional[float] = None  # the gate on optimized_metric's value; null: always deploy
    name: Optional[str] = None  # null: derived from the run's name
    namespace: Optional[str] = None  # null: the runs' namespace (where the claim is)
    # The account KFP runs the serve task's pod as: the preflight asks whether it may create InferenceServices.
    service_account: str = "pipeline-runner"
    runtime: Optional[str] = None  # a ServingRuntime name; null: KServe picks one by modelFormat onnx
    min_replicas: int = 1
    max_replicas: int = 1
    max_batch_size: int = 64  # Triton's: the most images one request may carry
    istio_sidecar: bool = False  # false: the predictor pod opts out of Istio sidecar injection
    ready_timeout_s: float = 600.0  # the serve task fails, with the reason, when the service is not Ready by then
    poll_interval_s: float = 5.0  # seconds between reads of its status
    smoke_test: bool = True  # on Ready, a v2 inference at its address must answer the run's model.onnx's scores
    # The predictor's uid and gid (its pod and model container run as non-root): the stock kserve-tritonserver
    # runtime's image runs as root but holds Triton's own non-root user, triton-server (1000:1000).
    run_as_user: int = 1000
    run_as_group: int = 1000
    resources: ServeResourcesConfig = field(default_factory=ServeResourcesConfig)


@dataclass
class CleanConfig:
    """backend.mode=clean (clean.py): what counts as old, and whether to delete it."""

    older_than_days: float = 7.0
    delete: bool = False  # false: list only


@dataclass
class KfpBackendConfig:
    _target_: str = "backends.kfp.backend.KfpBackend"
    mode: KfpMode = KfpMode.compile
    component: ComponentStyle = ComponentStyle.python
    image: str = "mmclf:latest"
    image_pull_policy: PullPolicy = PullPolicy.IfNotPresent
    image_pull_secrets: list[str] = field(default_factory=list)
    run_as_user: int = 1000  # the step pods' uid and gid: the image's user (docker/Dockerfile)
    run_as_group: int = 1000
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[Toleration] = field(default_factory=list)
    pod_labels: dict[str, str] = field(default_factory=dict)
    pod_annotations: dict[str, str] = field(default_factory=dict)
    retries: int = 0
    timeout_s: Optional[int] = None  # per task; null = no limit
    host: Optional[str] = None  # null: $KF_PIPELINES_ENDPOINT
    namespace: Optional[str] = None
    kube_context: Optional[str] = None  # kubeconfig context for cluster look-ups; null: the current one
    experiment: Optional[str] = None  # null: "mmclf"
    token_env: Optional[str] = None  # name of the env var holding a bearer token
    wait: bool = False
    poll_interval_s: float = 10.0
    max_in_flight: int = 4  # a sweep with mode=submit and wait=true: runs going on the cluster at once
    distributed: Distributed = Distributed.pod  # how dist.* runs: in the train pod, or as a TrainJob
    keep_trainjob: bool = False  # trainjob: keep it after the run (else the exit handler's clean-up task deletes it)
    trainjob: TrainJobConfig = field(default_factory=TrainJobConfig)
    volume: VolumeConfig = field(default_factory=VolumeConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)


def sweep_jobs_at_once(mode: str, wait: bool, max_in_flight: int) -> int:
    """How many sweep jobs Hydra's launcher runs at once: only submit-and-wait jobs mostly wait on the
    cluster; any other mode compiles, or trains on this machine (mode=local), where jobs in parallel
    would compete for the same cores."""
    return max_in_flight if mode == KfpMode.submit and wait else 1


ConfigStore.instance().store(group="backend", name="kfp_schema", node=KfpBackendConfig)
# The launcher conf/backend/kfp.yaml selects for sweeps: Hydra's joblib launcher, one process per job,
# sweep_jobs_at_once of them at a time (n_jobs 1 runs them in this process, in order, as Hydra's basic
# launcher does). Stored here rather than as conf/hydra/launcher/*.yaml, which the package would not ship.
OmegaConf.register_new_resolver("mmclf_kfp_jobs_at_once", sweep_jobs_at_once, replace=True)
ConfigStore.instance().store(group="hydra/launcher", name="kfp_in_flight", provider="mmclf", node=JobLibLauncherConf(
    n_jobs="${mmclf_kfp_jobs_at_once:${backend.mode},${backend.wait},${backend.max_in_flight}}"))

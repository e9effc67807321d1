"""Value checks for ``backend=kfp``: a bad value stops before anything is compiled or created.

The typed schema (schema.py) already refused wrong types and unknown keys; these checks
catch values a cluster would only refuse at run time, minutes later, inside a pod.
"""
import re

from omegaconf import DictConfig

from backends.kfp.cluster.access import cluster_access
from backends.kfp.compiling.compile import is_own_images, pod_config
from backends.kfp.compiling.paths import check_pod_paths
from backends.kfp.submitting.endpoint import host_from_config, read_token, target_from_config
from backends.kfp.volume.layout import VolumeLayout
from mmclf.errors import ConfigError

# Kubernetes quantities, narrowed to what both Kubernetes and the kfp SDK's own checks accept.
SIZE = re.compile(r"^(\d+(\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|M|G|T|P|E)?$")  # a volume size, e.g. 20Gi
CPU = re.compile(r"^(\d*\.?\d+)m?$")  # cores or millicores, e.g. 4, 0.5, 500m
MEMORY = re.compile(r"^(\d+(\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|K|M|G|T|P|E)?$")  # e.g. 16Gi, 1.5Gi
ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
# A DNS-1123 subdomain: what Kubernetes accepts as a claim name.
CLAIM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# CreatePVC names the claim <uuid (36 characters)><suffix>: a DNS-1123 label has at most 63.
PVC_NAME_SUFFIX = re.compile(r"^(-*[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$")
MAX_SUFFIX = 63 - 36
# Label and annotation keys: an optional DNS-subdomain prefix and "/", then a name of up to 63 characters.
QUALIFIED_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                            r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
NO_CLASS_FIX = "backend.volume.storage_class=<class> (`kubectl get storageclass` lists them)"
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def check_quantity(key: str, value, pattern: re.Pattern, example: str) -> None:
    """``value`` must be a positive quantity that ``pattern`` accepts, such as ``20Gi`` or ``500m``."""
    match = pattern.match(str(value))
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{key}={value!r}: not a positive Kubernetes quantity; use e.g. {key}={example}")


def check_volume(volume: DictConfig) -> None:
    """Mount path, access modes, size and, per mode, the claim name or PVC name suffix."""
    mount = volume.mount_path
    if not mount.startswith("/") or mount.rstrip("/") == "":
        raise ConfigError(f"backend.volume.mount_path={mount!r}: must be an absolute folder other than /, "
                          "e.g. backend.volume.mount_path=/mnt/mmclf")
    mode = volume.mode
    if mode == "existing":
        if not volume.claim_name or not CLAIM_NAME.match(volume.claim_name):
            raise ConfigError(f"backend.volume.claim_name={volume.claim_name!r}: backend.volume.mode=existing "
                              "mounts a claim made by hand; name it, e.g. backend.volume.claim_name=mmclf-data")
        return
    check_quantity("backend.volume.size", volume.size, SIZE, "20Gi")
    if volume.access_modes is not None and not volume.access_modes:
        raise ConfigError("backend.volume.access_modes=[]: give at least one, e.g. "
                          "backend.volume.access_modes=[ReadWriteOnce], or null for what the run needs")
    for access_mode in volume.access_modes or []:
        if access_mode not in ACCESS_MODES:
            raise ConfigError(f"backend.volume.access_modes: {access_mode!r} is not one of {list(ACCESS_MODES)}")
    suffix = volume.pvc_name_suffix
    if mode == "create" and (not PVC_NAME_SUFFIX.match(suffix) or len(suffix) > MAX_SUFFIX):
        raise ConfigError(f"backend.volume.pvc_name_suffix={suffix!r}: up to {MAX_SUFFIX} lower-case letters, "
                          "digits and '-', not ending in '-', e.g. backend.volume.pvc_name_suffix=-mmclf")


def check_resources(resources: DictConfig) -> None:
    """Accelerator count and type, CPU and memory limits of the train and test tasks."""
    count = resources.accelerator_count
    if count < 0:
        raise ConfigError(f"backend.resources.accelerator_count={count}: must be 0 (no accelerator) or more")
    if count > 0 and not resources.accelerator_type:
        raise ConfigError("backend.resources.accelerator_type is empty but accelerator_count="
                          f"{count}; set e.g. backend.resources.accelerator_type=nvidia.com/gpu, or count 0")
    if resources.cpu is not None:
        check_quantity("backend.resources.cpu", resources.cpu, CPU, "4")
    if resources.memory is not None:
        check_quantity("backend.resources.memory", resources.memory, MEMORY, "16Gi")
    if resources.shm_size is not None:
        check_quantity("backend.resources.shm_size", resources.shm_size, MEMORY, "8Gi")


def _check_labels(key: str, labels: DictConfig, values_too: bool) -> None:
    for name, value in labels.items():
        if not QUALIFIED_NAME.match(name) or len(name.split("/")[0]) > 253:
            raise ConfigError(f"{key}: {name!r} is not a Kubernetes label or annotation key (an optional DNS prefix "
                              "and '/', then up to 63 letters, digits, '-', '_' or '.')")
        if values_too and not LABEL_VALUE.match(str(value)):
            raise ConfigError(f"{key}: {name}={value!r}: a label value is up to 63 letters, digits, '-', '_' or "
                              "'.', beginning and ending with a letter or digit")


def check_tolerations(tolerations) -> None:
    """Each toleration as the Kubernetes API server would validate it."""
    for index, toleration in enumerate(tolerations):
        key = f"backend.tolerations[{index}]"
        if toleration.key is None and toleration.operator != "Exists":
            raise ConfigError(f"{key}: without a key, a toleration matches every taint and needs operator: Exists")
        if toleration.key is not None and not QUALIFIED_NAME.match(toleration.key):
            raise ConfigError(f"{key}.key={toleration.key!r}: not a taint key (e.g. nvidia.com/gpu)")
        if toleration.operator == "Exists" and toleration.value:
            raise ConfigError(f"{key}: operator Exists matches any value; drop value={toleration.value!r}")
        if toleration.value and not LABEL_VALUE.match(toleration.value):
            raise ConfigError(f"{key}.value={toleration.value!r}: not a taint value (up to 63 letters, digits, "
                              "'-', '_' or '.')")
        if toleration.tolerationSeconds is not None and toleration.effect != "NoExecute":
            raise ConfigError(f"{key}: tolerationSeconds applies to effect NoExecute only; set effect: NoExecute "
                              "or drop tolerationSeconds")


def check_scheduling(backend: DictConfig) -> None:
    """Node selector, tolerations, pull secrets, pod labels and annotations, the pods' uid and gid."""
    _check_labels("backend.node_selector", backend.node_selector, values_too=True)
    _check_labels("backend.pod_labels", backend.pod_labels, values_too=True)
    _check_labels("backend.pod_annotations", backend.pod_annotations, values_too=False)
    check_tolerations(backend.tolerations)
    for name in backend.image_pull_secrets:
        if not CLAIM_NAME.match(name) or len(name) > 253:
            raise ConfigError(f"backend.image_pull_secrets: {name!r} is not a secret name (lower-case letters, "
                              "digits, '-' and '.'), e.g. backend.image_pull_secrets=[regcred]")
    check_user("backend", backend, "the image's user is 1000")


def check_user(prefix: str, pods: DictConfig, default: str) -> None:
    """``<prefix>.run_as_user`` and ``run_as_group`` of pods that run with runAsNonRoot: the kubelet refuses
    to start one whose uid is root's."""
    if pods.run_as_user < 1:
        raise ConfigError(f"{prefix}.run_as_user={pods.run_as_user}: these pods run as non-root (runAsNonRoot), "
                          f"so the uid is 1 or more; {default}")
    if pods.run_as_group < 0:
        raise ConfigError(f"{prefix}.run_as_group={pods.run_as_group}: a gid is 0 or more; {default}")


def check_backend(backend: DictConfig) -> None:
    """Raise ConfigError naming the key for any ``backend.*`` value a cluster would refuse."""
    if not backend.image or any(c.isspace() for c in backend.image):
        raise ConfigError(f"backend.image={backend.image!r}: name the project image, e.g. backend.image=mmclf:latest")
    if backend.retries < 0:
        raise ConfigError(f"backend.retries={backend.retries}: must be 0 (no retry) or more")
    if backend.timeout_s is not None and backend.timeout_s <= 0:
        raise ConfigError(f"backend.timeout_s={backend.timeout_s}: must be positive seconds, or null for no limit")
    if backend.poll_interval_s <= 0:
        raise ConfigError(f"backend.poll_interval_s={backend.poll_interval_s}: must be positive seconds, e.g. 10")
    if backend.max_in_flight < 1:
        raise ConfigError(f"backend.max_in_flight={backend.max_in_flight}: at least 1 run at a time, e.g. 4")
    if backend.component == "container" and backend.wait:
        raise ConfigError("backend.component=container with backend.wait=true: container components fill no KFP "
                          "Metrics artifact, so no metrics could come back; use backend.component=python")
    check_volume(backend.volume)
    check_resources(backend.resources)
    check_scheduling(backend)
    host_from_config(backend)  # a host that is set must be a URL a client can use


def check_trainjob(backend: DictConfig) -> None:
    """backend.distributed=trainjob: a cluster, a claim every node can mount at once, a runtime name."""
    if backend.mode == "local":
        raise ConfigError("backend.distributed=trainjob with backend.mode=local: kfp.local runs the pipeline on this "
                          "machine and cannot create a TrainJob; use backend.mode=compile or submit, or "
                          "backend.distributed=pod")
    volume = backend.volume
    if volume.mode == "workspace":
        raise ConfigError("backend.distributed=trainjob with backend.volume.mode=workspace: the TrainJob's nodes mount "
                          "the run's claim by name, and a KFP workspace's claim has none the train task knows; use "
                          "backend.volume.mode=create or existing")
    if volume.access_modes is not None and "ReadWriteMany" not in volume.access_modes:
        raise ConfigError(f"backend.distributed=trainjob with backend.volume.access_modes={list(volume.access_modes)}: "
                          "the TrainJob's nodes mount the volume at once from different machines; set "
                          "backend.volume.access_modes=[ReadWriteMany] (an NFS, CephFS, EFS, Azure Files or Filestore "
                          "class, or an RWX claim with backend.volume.mode=existing)")
    if not CLAIM_NAME.match(backend.trainjob.runtime):
        raise ConfigError(f"backend.trainjob.runtime={backend.trainjob.runtime!r}: name a training runtime, e.g. "
                          "backend.trainjob.runtime=torch-distributed (kubectl get clustertrainingruntimes)")
    for key, example in (("poll_interval_s", 10), ("start_timeout_s", 600)):
        if backend.trainjob[key] <= 0:
            raise ConfigError(f"backend.trainjob.{key}={backend.trainjob[key]}: must be positive seconds, e.g. "
                              f"{example}")


def check_distributed(cfg: DictConfig) -> None:
    """``dist.*`` against the backend: several nodes need a TrainJob, and a train pod's processes each
    need one of its accelerators. mode=local trains on this machine: the core's own checks apply there."""
    backend, dist = cfg.backend, cfg.dist
    if backend.distributed == "trainjob":
        check_trainjob(backend)
    elif dist.nnodes > 1 and backend.mode != "local":  # mode=local: the core says it (check_runs_here)
        raise ConfigError(f"dist.nnodes={dist.nnodes} with backend.distributed=pod: several nodes run as a Kubeflow "
                          "Trainer TrainJob; set backend.distributed=trainjob, or dist.nnodes=1")
    count, nproc = backend.resources.accelerator_count, dist.nproc_per_node
    if backend.mode != "local" and count > 0 and nproc != "auto" and int(nproc) > count:
        raise ConfigError(f"dist.nproc_per_node={nproc} with backend.resources.accelerator_count={count}: each process "
                          f"needs an accelerator of its own; set dist.nproc_per_node=auto (= {count}) or "
                          f"backend.resources.accelerator_count={nproc}")


def check_tracking_store(logger: DictConfig) -> None:
    """logger=mlflow on a cluster: the pods report to a tracking server they can reach. Unset, each
    pod would fall back to a SQLite file of its own (and no environment variable reaches them)."""
    if logger.mlflow is None:
        return
    uri = logger.mlflow.tracking_uri or ""
    if not uri.startswith(("http://", "https://", "databricks")):
        raise ConfigError(f"logger.mlflow.tracking_uri={uri or None!r}: the pods report to MLflow on the cluster "
                          "and need a tracking server they can reach, e.g. "
                          "logger.mlflow.tracking_uri=http://mlflow.mlflow:5000 (or logger=text)")


def check_for_cluster(cfg: DictConfig) -> None:
    """What compile, submit and check need beyond the values, before anything is compiled: paths the
    pods can see; for submit a host, a token if one is named, and a storage class it can know; for check
    cluster access."""
    backend, volume = cfg.backend, cfg.backend.volume
    layout = VolumeLayout.of(volume)
    check_pod_paths(pod_config(cfg, layout.data), layout.root)
    if is_own_images(cfg) and volume.mode != "existing":
        raise ConfigError(f"data=folder on Kubeflow reads your images from the volume, and backend.volume.mode="
                          f"{volume.mode} starts from an empty one: copy the folder onto a claim (README: 'Your own "
                          "data on Kubeflow') and use backend.volume.mode=existing backend.volume.claim_name=<claim>")
    check_tracking_store(cfg.logger)
    if backend.mode == "submit":
        target_from_config(None, backend)
    if backend.mode == "submit" and volume.mode == "create" and not volume.storage_class and cluster_access() is None:
        raise ConfigError("backend.mode=submit: backend.volume.storage_class=null, and with no cluster access here "
                          "(no kubeconfig, not in a pod) the cluster's default class cannot be looked up; set "
                          f"{NO_CLASS_FIX}")
    if backend.mode == "check":
        read_token(backend.token_env)
    if backend.mode in ("check", "clean") and cluster_access() is None:
        raise ConfigError(f"backend.mode={backend.mode} asks the cluster and finds no access to one: point $KUBECONFIG "
                          "(or ~/.kube/config) at it, optionally with backend.kube_context, or run it in a pod")
    if backend.mode == "clean" and backend.clean.older_than_days < 0:
        raise ConfigError(f"backend.clean.older_than_days={backend.clean.older_than_days}: must be 0 or more days, "
                          "e.g. 7")

"""Value checks for ``backend.serve``: what KServe's webhook, the API server or the serve task would refuse
minutes into a run is refused before compiling, in one line naming the key (checks.py's style)."""
import re

from omegaconf import DictConfig, OmegaConf

from backends.kfp.checks import CLAIM_NAME, CPU, MEMORY, check_quantity, check_user
from backends.kfp.serving.manifest import MAX_NAME, NAME
from mmclf.errors import ConfigError
from mmclf.reports.mlflow_model import registered_name

# Kubernetes' quantity suffixes: decimal (m, k, M, ...) and binary (Ki, Mi, ...).
UNITS = {"m": 1e-3, "": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
         **{f"{prefix}i": 1024 ** power for power, prefix in enumerate("KMGTPE", start=1)}}
QUANTITY = re.compile(r"^(\d*\.?\d+)([a-zA-Z]*)$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a namespace's name


def quantity(text: str) -> float:
    """A Kubernetes quantity checks.py already accepted (e.g. 500m, 2Gi), as a number."""
    number, unit = QUANTITY.match(text).groups()
    return float(number) * UNITS[unit]


def check_serve_resources(resources: DictConfig) -> None:
    """Positive quantities, each request within its limit (the API server refuses the pod otherwise)."""
    key = "backend.serve.resources"
    for part in ("requests", "limits"):
        for name, pattern, example in (("cpu", CPU, "1"), ("memory", MEMORY, "2Gi")):
            if resources[part][name] is not None:
                check_quantity(f"{key}.{part}.{name}", resources[part][name], pattern, example)
    for name in ("cpu", "memory"):
        request, limit = resources.requests[name], resources.limits[name]
        if request is not None and limit is not None and quantity(str(request)) > quantity(str(limit)):
            raise ConfigError(f"{key}.requests.{name}={request} is above {key}.limits.{name}={limit}; Kubernetes "
                              "refuses such a pod: raise the limit or lower the request")
    if resources.accelerator_count < 0:
        raise ConfigError(f"{key}.accelerator_count={resources.accelerator_count}: must be 0 (none) or more")
    if resources.accelerator_count > 0 and not resources.accelerator_type:
        raise ConfigError(f"{key}.accelerator_type is empty but accelerator_count={resources.accelerator_count}; "
                          "set e.g. backend.serve.resources.accelerator_type=nvidia.com/gpu")


def check_serve_names(backend: DictConfig) -> None:
    """The InferenceService's name, namespace, runtime and the serve task's service account."""
    serve = backend.serve
    if serve.name is not None and (not NAME.match(serve.name) or len(serve.name) > MAX_NAME):
        raise ConfigError(f"backend.serve.name={serve.name!r}: an InferenceService's name is a DNS-1035 label of at "
                          f"most {MAX_NAME} characters (lower-case letters, digits and '-', starting with a letter, "
                          "not ending in '-'), e.g. backend.serve.name=pets-classifier; null derives one")
    if serve.namespace is not None and not DNS_LABEL.match(serve.namespace):
        raise ConfigError(f"backend.serve.namespace={serve.namespace!r}: not a namespace name; null: the runs' one")
    if serve.namespace and backend.namespace and serve.namespace != backend.namespace:
        raise ConfigError(f"backend.serve.namespace={serve.namespace} with backend.namespace={backend.namespace}: the "
                          "InferenceService reads the model from the run's claim, which is in the runs' namespace; "
                          "set backend.serve.namespace=null")
    for key in ("runtime", "service_account"):
        if serve[key] is not None and not CLAIM_NAME.match(serve[key]):
            raise ConfigError(f"backend.serve.{key}={serve[key]!r}: not a Kubernetes object name (lower-case "
                              "letters, digits, '-' and '.')")


def check_serve_volume(backend: DictConfig) -> None:
    """The InferenceService reads the model from the run's claim: a claim it can name, and that stays."""
    volume = backend.volume
    if backend.mode == "local":
        raise ConfigError("backend.serve.enabled=true with backend.mode=local: kfp.local runs the pipeline on this "
                          "machine and cannot create an InferenceService; use backend.mode=compile or submit (or "
                          "python -m mmclf.serve RUN_DIR here)")
    if volume.mode == "workspace":
        raise ConfigError("backend.serve.enabled=true with backend.volume.mode=workspace: the InferenceService reads "
                          "the model from the run's claim by name, and a KFP workspace's claim has none the serve task "
                          "knows; use backend.volume.mode=create or existing")
    if volume.mode == "create" and volume.delete_after:
        raise ConfigError("backend.serve.enabled=true with backend.volume.delete_after=true: the InferenceService "
                          "reads the model from the run's claim, which would be deleted; set "
                          "backend.volume.delete_after=false")


def check_serve(cfg: DictConfig) -> None:
    """``backend.serve`` when enabled: a model to serve, a claim to read it from, values KServe accepts."""
    backend, serve = cfg.backend, cfg.backend.serve
    if not serve.enabled:
        return
    if not OmegaConf.select(cfg, "runtime.export.onnx", default=False):
        raise ConfigError("backend.serve.enabled=true with runtime.export.onnx=false: the InferenceService serves the "
                          "run's ONNX model; set runtime.export.onnx=true")
    check_serve_volume(backend)
    registered = registered_name(cfg)
    if registered and serve.min_metric != cfg.min_metric:
        raise ConfigError(f"backend.serve.min_metric={serve.min_metric} with min_metric={cfg.min_metric} and "
                          f"logger.mlflow.registered_model={registered}: one gate decides both registering and "
                          f"serving; set min_metric={serve.min_metric} (backend.serve.min_metric follows it)")
    if serve.min_metric is not None and not 0 <= serve.min_metric <= 100:
        raise ConfigError(f"backend.serve.min_metric={serve.min_metric}: {cfg.optimized_metric} is a percentage; "
                          "give one from 0 to 100 (e.g. 90.0), or null to always deploy")
    if serve.min_replicas < 0 or serve.max_replicas < max(serve.min_replicas, 1):
        raise ConfigError(f"backend.serve.min_replicas={serve.min_replicas}, max_replicas={serve.max_replicas}: "
                          "need 0 <= min_replicas <= max_replicas and max_replicas >= 1")
    if serve.ready_timeout_s <= 0 or serve.poll_interval_s <= 0:
        raise ConfigError(f"backend.serve.ready_timeout_s={serve.ready_timeout_s}, poll_interval_s="
                          f"{serve.poll_interval_s}: both are seconds above 0 (the serve task waits for Ready)")
    if serve.max_batch_size < 1:
        raise ConfigError(f"backend.serve.max_batch_size={serve.max_batch_size}: at least 1 image per request")
    check_serve_names(backend)
    check_user("backend.serve", serve, "Triton's user in the stock runtime's image is 1000")
    check_serve_resources(serve.resources)

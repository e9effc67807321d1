"""backend.serve: the KServe InferenceService of a run's ONNX model, and the Triton model repository it reads.

KServe (``serving.kserve.io/v1beta1``) serves ``modelFormat: onnx`` with protocol v2 on Triton (the
``kserve-tritonserver`` ClusterServingRuntime of KServe's default install; ``backend.serve.runtime``
names another). Triton reads a model repository ``<repo>/<model>/<version>/model.onnx`` beside
``<repo>/<model>/config.pbtxt``, and KServe mounts a ``pvc://<claim>/<path>`` storageUri at the
runtime's ``--model-store`` (/mnt/models) with ``<path>`` as the subPath, without copying. So the serve
task lays the repository out in the run's own folder, ``serving/mmclf/1/model.onnx``, and the storageUri
points at ``serving``. The Triton model is named ``mmclf``, as ``python -m mmclf.serve`` names its model:
``/v2/models/mmclf/infer`` answers on both.

config.pbtxt is written, not left to Triton's auto-complete: for an ONNX model with a dynamic batch
dimension auto-complete sets ``max_batch_size`` to its ``default-max-batch-size``, 4, and refuses any
request of more images (Triton's model_configuration.md, "Default Max Batch Size and Dynamic Batcher").

Imported when compiling and by the serve task's pod: no kfp, no torch here.
"""
import hashlib
import re
from pathlib import PurePosixPath

import yaml
from omegaconf import DictConfig

from backends.kfp.trainjob.manifest import (
    CLAIM_PLACEHOLDER,
    ISTIO_INJECT,
    NAMESPACE_PLACEHOLDER,
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    RUN_ID_LABEL,
    RUN_ID_PLACEHOLDER,
)
from backends.kfp.volume.layout import VolumeLayout
from mmclf.deploy.protocol import INPUT, MODEL_NAME, OUTPUT
from mmclf.run.io import write_text_atomic
from mmclf.run.rundir import RunDir

API_VERSION = "serving.kserve.io/v1beta1"
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
# What the serve task (serve_task.py) and the preflight (serving/preflight.py) say when the rights are missing.
RBAC_FIX = ("give the pipeline's service account create, get and update on inferenceservices.serving.kserve.io in "
            "this namespace (README: Serve on Kubeflow)")
# KServe's webhook: a DNS-1035 label. 45 characters leave room for what KServe and Knative append
# (``<name>-predictor``, Knative's ``-00001`` revisions) within a DNS label's 63.
NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 45
MODEL_VERSION = "1"
# ONNX TensorProto element types -> Triton's; only what the exported graph has (uint8 in, float scores out).
TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8"}


def service_name(serve: DictConfig, run_dir: str) -> str:
    """``backend.serve.name``, else one derived from the run's name (the last part of ``run_dir``): as it
    is when short enough, else shortened with a hash of it, so that different runs keep different names."""
    if serve.name:
        return serve.name
    name = re.sub(r"[^a-z0-9-]+", "-", PurePosixPath(run_dir).name.lower()).strip("-")
    name = name if name[:1].isalpha() else f"mmclf-{name}"
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME - 9].rstrip('-')}-{digest}"
    return name


def storage_uri(backend: DictConfig, claim_name: str, run_folder: str) -> str:
    """``pvc://<claim>/<the run folder's serving/, relative to the claim's root>``."""
    path = PurePosixPath(run_folder, RunDir.SERVING).relative_to(VolumeLayout.of(backend.volume).root)
    return f"pvc://{claim_name}/{path}"


def _quantities(quantities: DictConfig) -> dict:
    return {key: str(value) for key, value in quantities.items() if value is not None}


def _resources(resources: DictConfig) -> dict:
    """requests and limits of the predictor container; accelerators as limits (requests default to them)."""
    limits = _quantities(resources.limits)
    if resources.accelerator_count > 0:
        limits[resources.accelerator_type] = str(resources.accelerator_count)
    parts = {"requests": _quantities(resources.requests), "limits": limits}
    return {key: value for key, value in parts.items() if value}


def _user(serve: DictConfig) -> dict:
    """Who the predictor runs as. runAsNonRoot alone is not enough: the stock Triton runtime sets no user
    and its image's is root, which the kubelet then refuses to start ("image will run as root")."""
    return {"runAsUser": int(serve.run_as_user), "runAsGroup": int(serve.run_as_group)}


def _model(serve: DictConfig, uri: str) -> dict:
    """The predictor's model: ONNX over protocol v2, in a container Pod Security ``restricted`` admits, as
    ``backend.serve.run_as_user`` (KServe merges these fields into the runtime's container)."""
    model = {"modelFormat": {"name": "onnx"}, "protocolVersion": "v2", "storageUri": uri,
             "securityContext": {**RESTRICTED_CONTAINER, **_user(serve)}}
    if serve.runtime:
        model["runtime"] = serve.runtime
    if _resources(serve.resources):
        model["resources"] = _resources(serve.resources)
    return model


def inference_service(cfg: DictConfig, run_dir: str, run_id: str, claim_name: str, namespace: str) -> dict:
    """The InferenceService serving the model of the KFP run ``run_id`` (folder ``<run_dir>-<run_id>`` on
    the claim ``claim_name``) in ``namespace``."""
    serve = cfg.backend.serve
    predictor = {
        "minReplicas": int(serve.min_replicas),
        "maxReplicas": int(serve.max_replicas),
        # The pod's own settings cover what KServe and Knative add beside the model container (queue-proxy).
        # No fsGroup: the kubelet would chown the whole shared claim; the model's files are world-readable.
        "securityContext": {**RESTRICTED_POD, **_user(serve)},
        "model": _model(serve, storage_uri(cfg.backend, claim_name, f"{run_dir}-{run_id}")),
    }
    if not serve.istio_sidecar:  # istio-init needs NET_ADMIN (without Istio CNI): Pod Security restricted refuses it
        predictor["annotations"] = {ISTIO_INJECT: "false"}
    labels = {"app.kubernetes.io/name": "mmclf", "app.kubernetes.io/component": "serve", RUN_ID_LABEL: run_id}
    return {"apiVersion": API_VERSION, "kind": "InferenceService",
            "metadata": {"name": service_name(serve, run_dir), "namespace": namespace, "labels": labels},
            "spec": {"predictor": predictor}}


def _dims(value_info) -> tuple[str, list]:
    """(Triton type, dims without the batch dimension) of a graph input or output."""
    tensor = value_info.type.tensor_type
    dims = tensor.shape.dim
    if dims[0].HasField("dim_value") or tensor.elem_type not in TRITON_TYPES:
        raise ValueError(f"{value_info.name}: not a batch-dynamic {'/'.join(TRITON_TYPES.values())} tensor")
    return TRITON_TYPES[tensor.elem_type], [d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:]]


def triton_config(model_onnx: bytes, max_batch_size: int) -> str:
    """config.pbtxt for the exported graph: its input and output as they are, the batch dimension left out
    (Triton adds it below ``max_batch_size``)."""
    import onnx

    graph = onnx.load_from_string(model_onnx).graph
    tensors = {"input": [v for v in graph.input if v.name == INPUT], "output": [v for v in graph.output
                                                                                if v.name == OUTPUT]}
    lines = [f'name: "{MODEL_NAME}"', 'backend: "onnxruntime"', f"max_batch_size: {max_batch_size}"]
    for kind, (value_info,) in tensors.items():
        data_type, dims = _dims(value_info)
        lines.append(f'{kind} [ {{ name: "{value_info.name}" data_type: {data_type} dims: {dims} }} ]')
    return "\n".join(lines) + "\n"


def write_model_repository(folder: RunDir, max_batch_size: int) -> None:
    """The Triton model repository in ``folder/serving``: the run's model.onnx as version 1 of ``mmclf``,
    readable by any user (folders 0755, files 0644, whatever the pod's umask): the predictor runs as
    ``backend.serve.run_as_user``, which need not be the step pods' user who writes it."""
    from mmclf.run.io import write_bytes_atomic

    model = folder.onnx_model.read_bytes()
    repository = folder.serving / MODEL_NAME
    (repository / MODEL_VERSION).mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(repository / MODEL_VERSION / RunDir.ONNX_MODEL, model)
    write_text_atomic(repository / "config.pbtxt", triton_config(model, max_batch_size))
    for path in (folder.serving, repository, repository / MODEL_VERSION):
        path.chmod(0o755)
    for path in (repository / MODEL_VERSION / RunDir.ONNX_MODEL, repository / "config.pbtxt"):
        path.chmod(0o644)


def manifest_text(manifest: dict, header: str) -> str:
    return header + yaml.safe_dump(manifest, sort_keys=False, width=120)


def write_review_manifest(cfg: DictConfig, volume_run_dir: str, run_dir: RunDir) -> None:
    """Write inferenceservice.yaml into ``run_dir`` for review: what the serve task of the pipeline compiled
    with ``cfg`` creates when the gate lets it, with placeholders for what only the KFP run knows."""
    backend = cfg.backend
    claim = backend.volume.claim_name if backend.volume.mode == "existing" else CLAIM_PLACEHOLDER
    namespace = backend.serve.namespace or backend.namespace or NAMESPACE_PLACEHOLDER
    manifest = inference_service(cfg, volume_run_dir, RUN_ID_PLACEHOLDER, claim, namespace)
    gate = backend.serve.min_metric
    header = (f"# The InferenceService the serve task creates (backend.serve), for review, "
              f"{'always' if gate is None else f'when {cfg.optimized_metric} >= {gate}'}. Placeholders, filled in "
              f"when the KFP run runs: {RUN_ID_PLACEHOLDER} (the KFP run's id), {CLAIM_PLACEHOLDER} (the claim "
              f"create-volume makes), {NAMESPACE_PLACEHOLDER} (the namespace of the run's pods).\n")
    write_text_atomic(run_dir.inference_service, manifest_text(manifest, header))
    print(f"inferenceservice written: {run_dir.inference_service} (what the serve task creates: "
          f"{manifest['metadata']['name']}, /v2/models/{MODEL_NAME}/infer)")

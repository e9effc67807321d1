"""backend.distributed=trainjob: the Kubeflow Trainer TrainJob the train task creates, as a manifest.

Kubeflow Trainer v2.3 (``trainer.kubeflow.org/v1alpha1``). The TrainJob references a runtime
(``backend.trainjob.runtime``, default the ``torch-distributed`` ClusterTrainingRuntime Trainer ships),
whose trainer replicated job and container are both named ``node``. Trainer's torch plugin gives every
node's container ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and
``PET_MASTER_PORT``; torchrun reads those as its own options. Each node runs the step entry point,
``python -m mmclf.steps train --run-dir FOLDER``, on the run's folder: the step reads the config
prepare-data recorded there (config.yaml, the pipeline's parameters applied) and starts torchrun.

What the Trainer API cannot take from the pipeline's pod settings is said where it is left out:
runtimePatches may not patch a container's image pull policy (ContainerPatch has name, env,
volumeMounts and securityContext only), nor set env on the ``node`` container (Trainer's webhook
refuses it; env goes in ``spec.trainer.env``).

Imported by the train pod (through launcher.py) and when compiling: no kfp, no torch here.
"""
import re

import yaml
from omegaconf import DictConfig, OmegaConf

from backends.kfp.volume.layout import VolumeLayout, run_folder
from mmclf.run.io import write_text_atomic
from mmclf.run.rundir import RunDir
from mmclf.steps import entry_point

API_VERSION = "trainer.kubeflow.org/v1alpha1"
GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
# What the launcher (launcher.py) and the preflight (trainjob/preflight.py) say when the rights are missing.
RBAC_FIX = ("give the pipeline's service account create, get and delete on trainjobs.trainer.kubeflow.org in this "
            "namespace (README: Several GPUs and several nodes)")
RIGHTS = ("create", "get", "delete")  # what the train task does with its TrainJob (launcher.py)
NODE = "node"  # the trainer replicated job and container of Trainer's torch runtimes (constants.Node)
# runtimePatches are keyed by manager, which Trainer's webhook wants domain-prefixed ("domain/path").
PATCH_MANAGER = "mmclf/kfp-train-task"
RUN_ID_LABEL = "pipeline/runid"  # the label KFP puts on a run's workflow and pods
VOLUME, SHM = "mmclf-volume", "dshm"  # volume names in the node pods
# metadata.name: an RFC 1035 label of at most 63 characters (Trainer's CRD validation rules).
NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Istio's opt-out, as label and annotation (Istio reads either, by version): a sidecar outlives the
# training container, so the node's pod never ends and the TrainJob stays running (kubeflow/trainer#1778).
ISTIO_INJECT = "sidecar.istio.io/inject"
# What Pod Security ``restricted`` asks of every container and pod (profile namespaces may enforce it).
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
# What the API server answers a strict create of a runtimePatches TrainJob where Trainer v2.1 serves the CRD
# (v2.1 has podTemplateOverrides instead; runtimePatches and activeDeadlineSeconds came in v2.2).
V2_1_ANSWER = 'unknown field "spec.runtimePatches"'
# Placeholders in the trainjob.yaml written when compiling: known only when the KFP run runs.
RUN_ID_PLACEHOLDER, CLAIM_PLACEHOLDER, NAMESPACE_PLACEHOLDER = "<run-id>", "<claim>", "<namespace>"


def trainjob_name(run_id: str) -> str:
    """``mmclf-<KFP run id>``: one TrainJob per KFP run, the same for every retry of its train task,
    so a retried task finds the TrainJob an earlier try created (a UUID: 42 characters, leaving room
    for JobSet's ``<name>-node-0-0`` pod host names within 63)."""
    return f"mmclf-{run_id}".lower()[:63].rstrip("-")


def _resources(resources: DictConfig) -> dict:
    """resourcesPerNode: what the train pod would request, as limits (requests default to them)."""
    limits = {}
    if resources.accelerator_count > 0:
        limits[resources.accelerator_type] = str(resources.accelerator_count)
    if resources.cpu is not None:
        limits["cpu"] = str(resources.cpu)
    if resources.memory is not None:
        limits["memory"] = str(resources.memory)
    return {"limits": limits} if limits else {}


def _volumes(backend: DictConfig, claim_name: str) -> tuple[list, list]:
    """(volumes, volume mounts): the run's claim where the step pods mount it, and /dev/shm."""
    volumes = [{"name": VOLUME, "persistentVolumeClaim": {"claimName": claim_name}}]
    mounts = [{"name": VOLUME, "mountPath": VolumeLayout.of(backend.volume).root}]
    if backend.resources.shm_size:
        volumes.append({"name": SHM, "emptyDir": {"medium": "Memory", "sizeLimit": str(backend.resources.shm_size)}})
        mounts.append({"name": SHM, "mountPath": "/dev/shm"})
    return volumes, mounts


def _pod_spec_patch(backend: DictConfig, claim_name: str) -> dict:
    """The node pods' settings that the pipeline gives its own pods: volumes, user, scheduling, pulls."""
    volumes, mounts = _volumes(backend, claim_name)
    spec = {
        "volumes": volumes,
        "containers": [{"name": NODE, "volumeMounts": mounts, "securityContext": RESTRICTED_CONTAINER}],
        "securityContext": {"runAsUser": backend.run_as_user, "runAsGroup": backend.run_as_group, **RESTRICTED_POD},
    }
    if backend.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in backend.image_pull_secrets]
    if backend.node_selector:
        spec["nodeSelector"] = dict(backend.node_selector)
    if backend.tolerations:
        spec["tolerations"] = [{key: value for key, value in OmegaConf.to_container(t, enum_to_str=True).items()
                                if value is not None} for t in backend.tolerations]
    return spec


def _pod_metadata(backend: DictConfig) -> dict:
    """The node pods' labels and annotations: the pipeline's pods', and no Istio sidecar."""
    return {"labels": {**backend.pod_labels, ISTIO_INJECT: "false"},
            "annotations": {**backend.pod_annotations, ISTIO_INJECT: "false"}}


def _pod_template_override(backend: DictConfig, claim_name: str) -> dict:
    """Trainer v2.1's ``podTemplateOverrides`` entry: the node pods' volumes, scheduling, pulls and metadata.
    Its API has no security context at pod or container level: the runtime's and the image's user apply."""
    spec = _pod_spec_patch(backend, claim_name)
    del spec["securityContext"], spec["containers"][0]["securityContext"]
    return {"targetJobs": [{"name": NODE}], "metadata": _pod_metadata(backend), "spec": spec}


def trainjob_manifest(cfg: DictConfig, run_dir: str, run_id: str, claim_name: str, namespace: str,
                      trainer_v2_1: bool = False) -> dict:
    """The TrainJob that trains ``cfg`` on ``dist.nnodes`` nodes into ``<run_dir>-<run_id>`` on the
    claim ``claim_name``, in ``namespace``: for Trainer v2.2 and later (``runtimePatches``,
    ``activeDeadlineSeconds``), or with ``trainer_v2_1`` for v2.1 (``podTemplateOverrides``, no deadline)."""
    backend, dist = cfg.backend, cfg.dist
    trainer = {
        "image": backend.image,
        "command": ["python", *entry_point("train", run_folder(run_dir, run_id))],
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],  # the nodes' logs as they happen
        "numNodes": int(dist.nnodes),
        "numProcPerNode": int(dist.nproc_per_node),  # resolved when compiling (compile.processes_per_pod)
    }
    if _resources(backend.resources):
        trainer["resourcesPerNode"] = _resources(backend.resources)
    spec = {
        "runtimeRef": {"name": backend.trainjob.runtime, "apiGroup": GROUP, "kind": str(backend.trainjob.runtime_kind)},
        "trainer": trainer,
    }
    if trainer_v2_1:
        spec["podTemplateOverrides"] = [_pod_template_override(backend, claim_name)]
    else:
        pod_template = {"metadata": _pod_metadata(backend), "spec": _pod_spec_patch(backend, claim_name)}
        spec["runtimePatches"] = [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
            "replicatedJobs": [{"name": NODE, "template": {"spec": {"template": pod_template}}}]}}}}]
        if backend.timeout_s:  # the train task's limit holds for its TrainJob too: Trainer fails it then
            spec["activeDeadlineSeconds"] = int(backend.timeout_s)
    labels = {"app.kubernetes.io/name": "mmclf", "app.kubernetes.io/component": "train", RUN_ID_LABEL: run_id}
    return {"apiVersion": API_VERSION, "kind": "TrainJob",
            "metadata": {"name": trainjob_name(run_id), "namespace": namespace, "labels": labels},
            "spec": spec}


def write_review_manifest(cfg: DictConfig, volume_run_dir: str, run_dir: RunDir) -> None:
    """Write trainjob.yaml into ``run_dir`` for review: the manifest the train task of the pipeline
    compiled with ``cfg`` (the pods' config parameter) will create, with placeholders for what only the
    KFP run knows (its id, the claim create-volume makes, the namespace its pods run in)."""
    volume = cfg.backend.volume
    claim = volume.claim_name if volume.mode == "existing" else CLAIM_PLACEHOLDER
    manifest = trainjob_manifest(cfg, volume_run_dir, RUN_ID_PLACEHOLDER, claim,
                                 cfg.backend.namespace or NAMESPACE_PLACEHOLDER)
    header = (f"# The TrainJob the train task creates (backend.distributed=trainjob), for review. Placeholders, "
              f"filled in by the train task when the KFP run runs: {RUN_ID_PLACEHOLDER} (the KFP run's id), "
              f"{CLAIM_PLACEHOLDER} (the claim create-volume makes), {NAMESPACE_PLACEHOLDER} (the namespace of "
              "the run's pods). The nodes read the run's config.yaml, which prepare-data records in the run's "
              "folder with the pipeline parameters' values applied.\n")
    path = run_dir.trainjob
    write_text_atomic(path, header + yaml.safe_dump(manifest, sort_keys=False, width=120))
    print(f"trainjob written: {path} (what the train task creates: {manifest['spec']['trainer']['numNodes']} "
          f"nodes x {manifest['spec']['trainer']['numProcPerNode']} processes, runtime {cfg.backend.trainjob.runtime})")

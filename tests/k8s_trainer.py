"""The TrainJob schema of two Kubeflow Trainer releases, for the loopback API server's ``fieldValidation=Strict``.

The API server decodes a custom resource against its CRD's schema; with ``fieldValidation=Strict`` a field
the schema does not declare is a 400 BadRequest, worded as Kubernetes words it (checked against reports of
real clusters: ``TrainJob in version "v1alpha1" cannot be handled as a TrainJob: strict decoding error:
unknown field "spec.runtimePatches"``), and nothing is created. Without it the field is dropped with a warning.

- v2.3 (``runtimePatches``, ``activeDeadlineSeconds``): the ``kubeflow-trainer-api`` 2.3 package's own models.
- v2.1, what the Kubeflow platform releases (manifests v1.11) ship: its ``TrainJobSpec`` has
  ``podTemplateOverrides`` (target jobs, metadata, and a pod spec override of affinity, containers,
  image pull secrets, init containers, node selector, scheduling gates, service account, tolerations and
  volumes; a container override of env, name and volume mounts: no security context at either level),
  ``labels``, ``annotations`` and no ``runtimePatches`` or ``activeDeadlineSeconds``. Transcribed from the
  models of ``kubeflow-trainer-api`` 2.1.0 (``trainer_v1alpha1_train_job_spec.py``,
  ``trainer_v1alpha1_pod_template_override.py``, ``..._pod_template_spec_override.py``,
  ``..._container_override.py``); the parts both releases share (trainer, runtimeRef, Kubernetes types)
  are checked against v2.3's models.
"""
import typing

from kubeflow_trainer_api import models
from pydantic import BaseModel

from tests.k8s_objects import CREATED

ANY = object()  # a value the check does not look into


def _fields(model: type) -> dict:
    """JSON name -> the model class (or ANY) of each field of a pydantic model of kubeflow_trainer_api."""
    return {field.alias or name: _nested(field.annotation) for name, field in model.model_fields.items()}


def _nested(annotation):
    """The model class inside Optional[List[X]] and the like; ANY for plain values and maps (their keys
    are data, not fields)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) is dict:
        return ANY
    for arg in typing.get_args(annotation):
        found = _nested(arg)
        if found is not ANY:
            return found
    return ANY


_V2_1_CONTAINER = {"env": models.IoK8sApiCoreV1EnvVar, "name": ANY, "volumeMounts": models.IoK8sApiCoreV1VolumeMount}
_V2_1_POD_SPEC = {"affinity": models.IoK8sApiCoreV1Affinity, "containers": _V2_1_CONTAINER,
                  "imagePullSecrets": models.IoK8sApiCoreV1LocalObjectReference, "initContainers": _V2_1_CONTAINER,
                  "nodeSelector": ANY, "schedulingGates": models.IoK8sApiCoreV1PodSchedulingGate,
                  "serviceAccountName": ANY, "tolerations": models.IoK8sApiCoreV1Toleration,
                  "volumes": models.IoK8sApiCoreV1Volume}
_V2_1_SPEC = {"annotations": ANY, "initializer": models.TrainerV1alpha1Initializer, "labels": ANY, "managedBy": ANY,
              "podTemplateOverrides": {"metadata": models.IoK8sApimachineryPkgApisMetaV1ObjectMeta,
                                       "spec": _V2_1_POD_SPEC, "targetJobs": {"name": ANY}},
              "runtimeRef": models.TrainerV1alpha1RuntimeRef, "suspend": ANY, "trainer": models.TrainerV1alpha1Trainer}
SPECS = {"v2.3": models.TrainerV1alpha1TrainJobSpec, "v2.1": _V2_1_SPEC}


def unknown_fields(data, schema, path: str) -> list[str]:
    """``unknown field "<path>"`` for each field of ``data`` that ``schema`` (a model class, a field table
    or ANY) does not declare, as the API server's strict decoding names them."""
    if schema is ANY or data is None:
        return []
    if isinstance(data, list):
        return [problem for i, item in enumerate(data) for problem in unknown_fields(item, schema, f"{path}[{i}]")]
    if not isinstance(data, dict):
        return []
    table = schema if isinstance(schema, dict) else _fields(schema)
    problems = [f'unknown field "{path}.{key}"' for key in data if key not in table]
    for key, value in data.items():
        if key in table:
            problems += unknown_fields(value, table[key], f"{path}.{key}")
    return problems


def strict_decoding_error(trainjob: dict, version: str) -> str:
    """The API server's message for ``trainjob`` under Trainer ``version``'s CRD, or "" when it decodes."""
    unknown = unknown_fields(trainjob.get("spec"), SPECS[version], "spec")
    if not unknown:
        return ""
    return ('TrainJob in version "v1alpha1" cannot be handled as a TrainJob: strict decoding error: '
            + ", ".join(unknown))


# --- Trainer's objects as its controller reports them -------------------------------------------


def node_pod(trainjob: str, index: int) -> dict:
    """A TrainJob's node pod as JobSet labels it: job 0 of replicated job node, completion index ``index``."""
    labels = {"jobset.sigs.k8s.io/jobset-name": trainjob, "jobset.sigs.k8s.io/replicatedjob-name": "node",
              "batch.kubernetes.io/job-completion-index": str(index)}
    return {"metadata": {"name": f"{trainjob}-node-0-{index}-abcde", "labels": labels}, "spec": {"containers": [
        {"name": "node", "image": "mmclf"}]}, "status": {"phase": "Running"}}


def training_runtime(name: str = "torch-distributed") -> dict:
    """A ClusterTrainingRuntime shaped like Trainer v2.3's torch-distributed (manifests/base/runtimes)."""
    container = {"name": "node", "image": "pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime"}
    ancestor = {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}
    job = {"name": "node", "template": {"metadata": {"labels": ancestor},
                                        "spec": {"template": {"spec": {"containers": [container]}}}}}
    labels = {"trainer.kubeflow.org/framework": "torch"}
    return {"metadata": {"name": name, "labels": labels, "creationTimestamp": CREATED},
            "spec": {"mlPolicy": {"numNodes": 1, "torch": {}}, "template": {"spec": {"replicatedJobs": [job]}}}}


def trainjob_condition(kind: str, reason: str, message: str, status: str = "True") -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": CREATED, "observedGeneration": 1}


def nodes_status(active: int = 0, ready: int = 0, succeeded: int = 0, failed: int = 0) -> dict:
    """``jobsStatus`` of the ``node`` replicated job (one child Job per node)."""
    return {"name": "node", "active": active, "ready": ready, "succeeded": succeeded, "failed": failed, "suspended": 0}


# A TrainJob's life as Trainer v2.3 reports it: no status, nodes starting, running, then Complete or Failed.
RUNNING = [{}, {"jobsStatus": [nodes_status(active=2)]}, {"jobsStatus": [nodes_status(active=2, ready=2)]}]
COMPLETE = RUNNING + [{"conditions": [trainjob_condition("Complete", "AllJobsCompleted",
                                                         "jobset completed successfully")],
                       "jobsStatus": [nodes_status(succeeded=2)]}]
FAILED = RUNNING + [{"conditions": [trainjob_condition("Failed", "FailedJobs", "jobset failed with failed job node-1")],
                     "jobsStatus": [nodes_status(active=1, failed=1)]}]

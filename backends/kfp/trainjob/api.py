"""The TrainJob API of one namespace, as the train task's pod uses it, and how to read a TrainJob's state.

Kubeflow Trainer v2.3 reports a TrainJob's state as conditions (``Suspended``, ``Complete``, ``Failed``;
there is no Running condition), per replicated job counts (``jobsStatus``: active, ready, succeeded,
failed, suspended) and, where the runtime reports it, the training's progress (``trainerStatus``:
progressPercentage, estimatedRemainingSeconds, metrics).
"""
from pathlib import Path

from kubernetes import client
from omegaconf import DictConfig

from backends.kfp.cluster.kube import KFP_NAMESPACE
from backends.kfp.submitting.endpoint import CONNECT_S, READ_S
from backends.kfp.trainjob.manifest import GROUP, PLURAL, VERSION

# The pod's own namespace (a Kubeflow profile's, in multi-user KFP): where its TrainJob goes.
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def pod_namespace(backend: DictConfig) -> str:
    """The pod's namespace in a cluster; else (a kubeconfig: tests, a workstation) backend.namespace."""
    if NAMESPACE_FILE.is_file():
        return NAMESPACE_FILE.read_text().strip()
    return backend.namespace or KFP_NAMESPACE


class TrainJobs:
    """The TrainJob API of one namespace, with short timeouts on every call."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.api, self.core, self.namespace = client.CustomObjectsApi(api), client.CoreV1Api(api), namespace

    def call(self, method, *args, **options):
        return method(GROUP, VERSION, self.namespace, PLURAL, *args, _request_timeout=(CONNECT_S, READ_S), **options)

    def create(self, manifest: dict) -> dict:
        """Create the TrainJob; a field the served CRD lacks is a 400 naming it, not a field dropped silently."""
        return self.call(self.api.create_namespaced_custom_object, manifest, field_validation="Strict")

    def get(self, name: str) -> dict:
        return self.call(self.api.get_namespaced_custom_object, name)

    def delete(self, name: str) -> None:
        self.call(self.api.delete_namespaced_custom_object, name)

    def where(self, name: str) -> str:
        return f"TrainJob {name} in namespace {self.namespace}"

    def logs_hint(self, name: str) -> str:
        return f"its logs: kubectl logs -n {self.namespace} -l jobset.sigs.k8s.io/jobset-name={name} --prefix --tail=-1"


def condition(trainjob: dict, kind: str):
    """The ``kind`` condition (Complete, Failed, Suspended) when its status is True, else None."""
    for cond in (trainjob.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def state_line(trainjob: dict) -> str:
    """The TrainJob's state in one line: its conditions, then its nodes' counts."""
    status = trainjob.get("status") or {}
    parts = [f"{c['type']}={c['status']}" + (f" ({c['reason']}: {c.get('message', '')})" if c.get("reason") else "")
             for c in status.get("conditions") or []]
    for job in status.get("jobsStatus") or []:
        counts = ", ".join(f"{job.get(key) or 0} {key}" for key in ("active", "ready", "succeeded", "failed"))
        parts.append(f"job {job['name']}: {counts}")
    if status.get("trainerStatus"):
        parts.append(f"trainer: {_progress(status['trainerStatus'])}")
    return "; ".join(parts) or "no status yet (waiting for the Trainer controller)"


def _progress(trainer: dict) -> str:
    """Trainer v2.3's trainerStatus, where the runtime reports it: done, time left, the latest metrics."""
    said = []
    if trainer.get("progressPercentage") is not None:
        said.append(f"{trainer['progressPercentage']}% done")
    if trainer.get("estimatedRemainingSeconds") is not None:
        said.append(f"about {trainer['estimatedRemainingSeconds']} s left")
    said += [f"{metric['name']} {metric['value']}" for metric in trainer.get("metrics") or []]
    return ", ".join(said) or "no progress reported yet"

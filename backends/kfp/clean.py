"""backend.mode=clean: the claims and TrainJobs mmclf runs left in a namespace, and, when asked, deleting old ones.

A run with ``backend.volume.mode=create`` makes a claim named ``<uuid><backend.volume.pvc_name_suffix>``
(``-mmclf``) that outlives it unless ``volume.delete_after`` and the run succeeded; a failed TrainJob is
kept for its logs until its KFP run is deleted. Both pile up and fill profile quotas. This lists them,
one line each with its age and whether a pod still mounts it (or the TrainJob is still going), and with
``backend.clean.delete=true`` deletes those older than ``backend.clean.older_than_days`` that nothing uses.
A claim named ``backend.volume.claim_name`` (mode=existing: yours) is never touched.
"""
import datetime

from kubernetes import client
from omegaconf import DictConfig

from backends.kfp.cluster.kube import Cluster
from backends.kfp.trainjob.api import condition
from backends.kfp.trainjob.manifest import GROUP, PLURAL, VERSION

MMCLF_LABEL = "app.kubernetes.io/name=mmclf"  # what trainjob/manifest.py labels every TrainJob with
LIVE_PHASES = ("Pending", "Running")


def _age_days(created: datetime.datetime, now: datetime.datetime) -> float:
    return (now - created).total_seconds() / 86400


def _users(cluster: Cluster) -> dict:
    """Claim name -> the pods not yet finished that mount it."""
    users = {}
    for pod in cluster.ask("pods", cluster.core.list_namespaced_pod, cluster.namespace).items:
        if pod.status and pod.status.phase in LIVE_PHASES:
            for volume in (pod.spec.volumes or []):
                if volume.persistent_volume_claim:
                    users.setdefault(volume.persistent_volume_claim.claim_name, []).append(pod.metadata.name)
    return users


def leftovers(cluster: Cluster, backend: DictConfig, now: datetime.datetime) -> list[dict]:
    """Every mmclf claim and TrainJob in the namespace: kind, name, age in days, what still uses it."""
    found, users = [], _users(cluster)
    claims = cluster.ask("persistent volume claims", cluster.core.list_namespaced_persistent_volume_claim,
                         cluster.namespace).items
    for claim in claims:
        name = claim.metadata.name
        if name.endswith(backend.volume.pvc_name_suffix) and name != backend.volume.claim_name:
            in_use = ", ".join(users.get(name, []))
            found.append({"kind": "claim", "name": name, "days": _age_days(claim.metadata.creation_timestamp, now),
                          "in_use": f"mounted by {in_use}" if in_use else ""})
    trainjobs = cluster.ask("TrainJobs", client.CustomObjectsApi(cluster.api).list_namespaced_custom_object, GROUP,
                            VERSION, cluster.namespace, PLURAL, label_selector=MMCLF_LABEL)["items"]
    for trainjob in trainjobs:
        created = datetime.datetime.fromisoformat(trainjob["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
        ended = condition(trainjob, "Complete") or condition(trainjob, "Failed")
        found.append({"kind": "TrainJob", "name": trainjob["metadata"]["name"], "days": _age_days(created, now),
                      "in_use": "" if ended else "still going"})
    return found


def clean(cluster: Cluster, backend: DictConfig, now: datetime.datetime) -> None:
    """Print one line per leftover; with backend.clean.delete, delete the old ones nothing uses."""
    limit, delete = backend.clean.older_than_days, backend.clean.delete
    found = leftovers(cluster, backend, now)
    for item in found:
        old = item["days"] > limit
        verdict = item["in_use"] or ("older than " if old else "younger than ") + f"{limit:g} days"
        deleting = delete and old and not item["in_use"]
        print(f"clean: {item['kind']} {item['name']} in namespace {cluster.namespace}: {item['days']:.1f} days old, "
              f"{verdict}{': deleting it' if deleting else ''}", flush=True)
        if deleting:
            _delete(cluster, item)
    old_unused = sum(item["days"] > limit and not item["in_use"] for item in found)
    advice = "deleted" if delete else "backend.clean.delete=true deletes them"
    print(f"clean: {len(found)} left by mmclf runs, {old_unused} older than {limit:g} days and unused ({advice})")


def _delete(cluster: Cluster, item: dict) -> None:
    if item["kind"] == "claim":
        cluster.ask(f"claim {item['name']}", cluster.core.delete_namespaced_persistent_volume_claim, item["name"],
                    cluster.namespace)
    else:
        cluster.ask(f"TrainJob {item['name']}", client.CustomObjectsApi(cluster.api).delete_namespaced_custom_object,
                    GROUP, VERSION, cluster.namespace, PLURAL, item["name"])

"""Why a TrainJob's nodes have not started: the cluster's own words, from its events.

A node pod that never runs (no free GPU, a quota, Pod Security refusing it, a suspended TrainJob) leaves
no log; the cluster says why in Warning events on the TrainJob, its JobSet, Jobs and pods (FailedCreate,
FailedScheduling, ...), all named after the TrainJob (``<name>``, ``<name>-node-0``,
``<name>-node-0-0-<id>``). Reading events needs ``list`` on ``events`` in the namespace; without it the
reason is said to be unknown, with the command that shows it.
"""
from kubernetes import client

from backends.kfp.submitting.endpoint import CONNECT_S, READ_S


def started(trainjob: dict) -> bool:
    """Whether a node pod has run: ready, or finished either way (Trainer v2.3's jobsStatus counts)."""
    jobs = (trainjob.get("status") or {}).get("jobsStatus") or []
    return any((job.get("ready") or 0) + (job.get("succeeded") or 0) + (job.get("failed") or 0) > 0 for job in jobs)


def why_not_started(core: client.CoreV1Api, namespace: str, name: str, trainjob: dict, timeout_s) -> str:
    """One line: the TrainJob's Suspended condition and its objects' latest distinct Warning events."""
    reasons = []
    for cond in (trainjob.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Suspended" and cond.get("status") == "True":
            reasons.append(f"Suspended ({cond.get('reason')}: {cond.get('message', '')})")
    try:
        events = core.list_namespaced_event(namespace, _request_timeout=(CONNECT_S, READ_S)).items
    except client.ApiException as exc:
        events = []
        reasons.append(f"its events could not be read (HTTP {exc.status}; give the run's service account list on "
                       "events)")
    warnings = [event for event in events if event.type == "Warning" and (event.involved_object.name or "")
                .startswith(name)]
    warnings.sort(key=lambda event: event.last_timestamp or event.event_time or event.metadata.creation_timestamp)
    seen = []
    for event in reversed(warnings):
        said = f"{event.involved_object.kind} {event.involved_object.name}: {event.reason}: {event.message}"
        if said not in seen:
            seen.append(said)
    reasons += seen[:3]
    cause = "; ".join(reasons) or "the cluster gave no reason (no Warning events)"
    return (f"no node pod of TrainJob {name} in namespace {namespace} ran within {timeout_s:g} s "
            f"(backend.trainjob.start_timeout_s): {cause}; kubectl describe trainjob -n {namespace} {name} and "
            f"kubectl get events -n {namespace} --field-selector type=Warning show more")

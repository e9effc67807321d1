"""The preflight's answers (preflight.py, trainjob/preflight.py, serving/preflight.py): a Finding and its
verdict, a question the cluster did not answer, and a service account's rights as a SubjectAccessReview
sees them. Here rather than in preflight.py, which runs the other modules' checks: they could not
import it back without an import cycle.
"""
from dataclasses import dataclass

from kubernetes import client

from backends.kfp.cluster.kube import Cluster, ClusterError

OK, PROBLEM, NOT_CHECKED, WARNING = "ok", "PROBLEM", "not checked", "WARNING"  # WARNING: a run goes, with a limit


@dataclass(frozen=True)
class Finding:
    verdict: str  # OK, PROBLEM, NOT_CHECKED or WARNING
    text: str


def unanswered(err: ClusterError, what: str) -> Finding:
    """A question the cluster did not answer: RBAC's refusal is not a problem of the run's."""
    if err.status == 403:
        return Finding(NOT_CHECKED, f"{what}: not allowed to read it ({err})")
    return Finding(PROBLEM, f"{what}: {err}")


def not_served(cluster: Cluster, group: str, version: str, plural: str, what: str, no_api: str,
               no_resource: str):
    """None when the cluster serves ``plural`` in ``group/version`` (API discovery); else the Finding
    saying so: ``no_api`` when the group version is not served, ``no_resource`` when it lacks ``plural``."""
    api = client.CustomObjectsApi(cluster.api)
    try:
        resources = cluster.ask(f"the {group}/{version} API", api.get_api_resources, group, version)
    except ClusterError as err:
        return Finding(PROBLEM, no_api) if err.status == 404 else unanswered(err, what)
    if plural not in [resource.name for resource in resources.resources]:
        return Finding(PROBLEM, no_resource)
    return None


def denied_verbs(cluster: Cluster, account: str, group: str, resource: str, verbs: tuple, what: str) -> list[str]:
    """Which of ``verbs`` on ``resource`` in the namespace the service account ``account`` may not use, by a
    SubjectAccessReview naming it (the task's pod runs as that account, not as whoever asks); ClusterError
    when the cluster does not let us ask."""
    user = f"system:serviceaccount:{cluster.namespace}:{account}"
    authorization = client.AuthorizationV1Api(cluster.api)
    denied = []
    for verb in verbs:
        review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
            user=user, groups=["system:serviceaccounts", f"system:serviceaccounts:{cluster.namespace}"],
            resource_attributes=client.V1ResourceAttributes(group=group, resource=resource, verb=verb,
                                                            namespace=cluster.namespace)))
        if not cluster.ask(what, authorization.create_subject_access_review, review).status.allowed:
            denied.append(verb)
    return denied

"""The preflight's questions for backend.serve.enabled: does the cluster serve InferenceServices, and may
the serve task's pod create them.

The API's presence is asked by discovery (``/apis/serving.kserve.io/v1beta1``), which any authenticated
user may read, where reading the CRD itself (apiextensions) is often an administrator's right. The rights
are asked with a SubjectAccessReview naming the account the serve task runs as
(``backend.serve.service_account``), as for TrainJobs (trainjob/preflight.py).
"""
from dataclasses import replace

from omegaconf import DictConfig

from backends.kfp.cluster.findings import OK, PROBLEM, Finding, denied_verbs, not_served, unanswered
from backends.kfp.cluster.kube import Cluster, ClusterError
from backends.kfp.serving.manifest import GROUP, PLURAL, RBAC_FIX, VERSION

VERBS = ("create", "get", "update")  # what serve_task.py does: create, or read and replace


def check_kserve(cluster: Cluster) -> Finding:
    """The cluster serves the InferenceService API (KServe's CRD is installed)."""
    missing = not_served(cluster, GROUP, VERSION, PLURAL, "KServe",
                         f"the cluster serves no InferenceService API ({GROUP}/{VERSION}): install KServe, or set "
                         "backend.serve.enabled=false", f"{GROUP}/{VERSION} has no {PLURAL}: install KServe's CRDs")
    return missing or Finding(OK, f"KServe serves InferenceServices ({GROUP}/{VERSION})")


def check_serve_rights(cluster: Cluster, serve: DictConfig) -> Finding:
    """The serve task's service account may create, read and replace InferenceServices in their namespace."""
    cluster = replace(cluster, namespace=serve.namespace or cluster.namespace)
    account = serve.service_account
    what = f"service account {account}'s rights on {PLURAL}.{GROUP} in namespace {cluster.namespace}"
    try:
        denied = denied_verbs(cluster, account, GROUP, PLURAL, VERBS, what)
    except ClusterError as err:
        return unanswered(err, what)
    if denied:
        return Finding(PROBLEM, f"{what}: may not {', '.join(denied)}; {RBAC_FIX} (or set "
                                "backend.serve.service_account to the account your KFP runs pods as)")
    return Finding(OK, f"{what}: {', '.join(VERBS)} allowed")

"""The preflight's questions for backend.distributed=trainjob: is Kubeflow Trainer there, is the runtime,
and may the train task's pod create TrainJobs.

The pod runs as the KFP run's service account, not as whoever runs the preflight, so its rights are
asked with a SubjectAccessReview naming that account (``backend.trainjob.service_account``); a
cluster that does not let us ask (HTTP 403: creating reviews is often an administrator's right)
leaves it not checked.
"""
from kubernetes import client
from omegaconf import DictConfig, OmegaConf

from backends.kfp.cluster.findings import (
    NOT_CHECKED,
    OK,
    PROBLEM,
    WARNING,
    Finding,
    denied_verbs,
    not_served,
    unanswered,
)
from backends.kfp.cluster.kube import Cluster, ClusterError
from backends.kfp.compiling.compile import processes_per_pod
from backends.kfp.trainjob.manifest import GROUP, PLURAL, RBAC_FIX, RIGHTS, V2_1_ANSWER, VERSION, trainjob_manifest


def check_trainer(cluster: Cluster, trainjob: DictConfig) -> Finding:
    """The cluster serves the TrainJob API, and the runtime the TrainJob names exists."""
    missing = not_served(cluster, GROUP, VERSION, PLURAL, "Kubeflow Trainer",
                         f"the cluster serves no TrainJob API ({GROUP}/{VERSION}): install Kubeflow Trainer v2.3, or "
                         "set backend.distributed=pod",
                         f"{GROUP}/{VERSION} has no {PLURAL}: install Kubeflow Trainer v2.3")
    if missing:
        return missing
    api = client.CustomObjectsApi(cluster.api)
    kind, name = trainjob.runtime_kind, trainjob.runtime
    what = f"{kind} {name}" + (f" in namespace {cluster.namespace}" if kind == "TrainingRuntime" else "")
    try:
        if kind == "TrainingRuntime":
            cluster.ask(what, api.get_namespaced_custom_object, GROUP, VERSION, cluster.namespace, "trainingruntimes",
                        name)
        else:
            cluster.ask(what, api.get_cluster_custom_object, GROUP, VERSION, "clustertrainingruntimes", name)
    except ClusterError as err:
        if err.status == 404:
            return Finding(PROBLEM, f"{what} does not exist: set backend.trainjob.runtime to one that `kubectl get "
                                    f"{kind.lower()}s` lists (Kubeflow Trainer installs torch-distributed)")
        return unanswered(err, what)
    return Finding(OK, f"Kubeflow Trainer serves TrainJobs; {what} exists")


def check_trainjob_rights(cluster: Cluster, trainjob: DictConfig) -> Finding:
    """The run's service account may create, read and delete TrainJobs in the namespace."""
    account = trainjob.service_account
    what = f"service account {account}'s rights on {PLURAL}.{GROUP} in namespace {cluster.namespace}"
    try:
        denied = denied_verbs(cluster, account, GROUP, PLURAL, RIGHTS, what)
    except ClusterError as err:
        return unanswered(err, what)
    if denied:
        return Finding(PROBLEM, f"{what}: may not {', '.join(denied)}; {RBAC_FIX} (or set "
                                "backend.trainjob.service_account to the account your KFP runs pods as)")
    return Finding(OK, f"{what}: {', '.join(RIGHTS)} allowed")


# The preflight's TrainJob: never created (a server-side dry run), named apart from every run's.
PREFLIGHT_RUN_ID, PREFLIGHT_CLAIM = "preflight", "mmclf-preflight-claim"


def check_trainjob_accepted(cluster: Cluster, cfg: DictConfig) -> Finding:
    """The cluster accepts this run's TrainJob: a server-side dry run (admission webhooks included, nothing
    created) of the manifest the train task will send, with strict field validation; on Trainer v2.1 the
    manifest it falls back to. Asked as whoever runs the check, not as the train task's account."""
    volume = cfg.backend.volume
    claim = volume.claim_name if volume.mode == "existing" else PREFLIGHT_CLAIM
    pod_cfg = OmegaConf.merge(cfg, {"dist": {"nproc_per_node": processes_per_pod(cfg)}})  # as compiling resolves it
    current, v2_1 = (trainjob_manifest(pod_cfg, "/preflight", PREFLIGHT_RUN_ID, claim, cluster.namespace,
                                       trainer_v2_1=old) for old in (False, True))
    what = f"a dry run of this run's TrainJob in namespace {cluster.namespace}"
    try:
        _dry_run(cluster, what, current)
        return Finding(OK, f"{what}: accepted (strict field validation, the Trainer webhook)")
    except ClusterError as err:
        if err.status != 400 or V2_1_ANSWER not in str(err):
            return _refused(what, err)
    try:
        _dry_run(cluster, what, v2_1)
    except ClusterError as err:
        return _refused(what, err)
    return Finding(WARNING, f"{what}: accepted as Trainer v2.1's (podTemplateOverrides): the node pods' user, "
                            "security context and deadline cannot be set there (Trainer v2.2 or later sets them)")


def _dry_run(cluster: Cluster, what: str, manifest: dict) -> None:
    cluster.ask(what, client.CustomObjectsApi(cluster.api).create_namespaced_custom_object, GROUP, VERSION,
                cluster.namespace, PLURAL, manifest, dry_run="All", field_validation="Strict")


def _refused(what: str, err: ClusterError) -> Finding:
    if err.status in (401, 403):  # the caller's rights, not the run's: the train task's are checked apart
        return Finding(NOT_CHECKED, f"{what}: you may not create TrainJobs here ({err})")
    return Finding(PROBLEM, f"{what}: {err}")

"""``backend.mode=check``: ask the cluster, one line each, what would make a run stall, before it does.

A run stalls rather than fails when its claim cannot bind (no such class, or a provisioner that cannot
make the access mode), its pods cannot be scheduled (no node with the accelerators) or pulled (a
missing pull secret), or the namespace refuses its pods. Submit asks the same questions first when it
has cluster access. A question the cluster does not let us ask (RBAC: HTTP 403) is reported as not
checked, and is not a problem.
"""
from omegaconf import DictConfig

from backends.kfp.cluster.findings import NOT_CHECKED, OK, PROBLEM, WARNING, Finding, unanswered
from backends.kfp.cluster.kube import Cluster, ClusterError, default_storage_class
from backends.kfp.submitting.client import check_reachable, security_context_ignored
from backends.kfp.submitting.endpoint import KfpError, host_from_config, target_from_config
from backends.kfp.volume.layout import claim_access_modes

# Provisioners that cannot make a ReadWriteMany filesystem volume: node-local paths and cloud block disks.
NO_RWX_PROVISIONERS = {
    "rancher.io/local-path", "kubevirt.io/hostpath-provisioner", "kubernetes.io/no-provisioner",
    "ebs.csi.aws.com", "kubernetes.io/aws-ebs", "pd.csi.storage.gke.io", "kubernetes.io/gce-pd",
    "disk.csi.azure.com", "kubernetes.io/azure-disk",
}
RWX_FIX = ("use an RWX class (an NFS provisioner, CephFS, EFS, Azure Files, Filestore) in "
           "backend.volume.storage_class, or backend.volume.mode=existing with an RWX claim made by hand; on a "
           "single-node cluster backend.volume.access_modes=[ReadWriteOnce] works (every node pod shares the node)")
PULL_SECRET_TYPES = ("kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg")


class PreflightFailed(KfpError):
    """The preflight found something that would make a run stall."""


def check_namespace(cluster: Cluster, volume: DictConfig) -> Finding:
    what = f"namespace {cluster.namespace}"
    try:
        namespace = cluster.ask(what, cluster.core.read_namespace, cluster.namespace)
    except ClusterError as err:
        if err.status == 404:
            return Finding(PROBLEM, f"{what} does not exist: set backend.namespace to your KFP profile's "
                                    "namespace (kubectl get namespaces)")
        return unanswered(err, what)
    enforced = (namespace.metadata.labels or {}).get("pod-security.kubernetes.io/enforce")
    if enforced == "restricted" and volume.make_writable:
        return Finding(PROBLEM, f"{what} enforces Pod Security 'restricted', which refuses the volume-permissions "
                                "task (it runs as root): set backend.volume.make_writable=false and make the "
                                "volume's root writable for backend.run_as_user yourself")
    return Finding(OK, f"{what} exists" + (f" (Pod Security: {enforced})" if enforced else ""))


def check_storage_class(cluster: Cluster, backend: DictConfig) -> Finding:
    """The class the claim will get exists, and its provisioner can make the access modes it needs."""
    volume = backend.volume
    try:
        if volume.storage_class:
            storage_class = cluster.ask(f"storage class {volume.storage_class}",
                                        cluster.storage.read_storage_class, volume.storage_class)
        else:
            storage_class = default_storage_class(cluster)
    except ClusterError as err:
        if err.status == 404:
            return Finding(PROBLEM, f"storage class {volume.storage_class} does not exist: set "
                                    "backend.volume.storage_class to one that `kubectl get storageclass` lists")
        return unanswered(err, "storage class")
    if storage_class is None:
        verdict = PROBLEM if volume.mode == "create" else NOT_CHECKED  # KFP's workspace config may name one
        return Finding(verdict, "the cluster has no default storage class: set backend.volume.storage_class to "
                                "one that `kubectl get storageclass` lists")
    name, provisioner = storage_class.metadata.name, storage_class.provisioner
    shown = f"storage class {name}{'' if volume.storage_class else ' (the default)'}, provisioner {provisioner}"
    if "ReadWriteMany" in claim_access_modes(backend) and provisioner in NO_RWX_PROVISIONERS:
        return Finding(PROBLEM, f"{shown}, cannot make ReadWriteMany volumes: the claim would stay Pending; {RWX_FIX}")
    return Finding(OK, shown)


def check_claim(cluster: Cluster, backend: DictConfig) -> Finding:
    """mode=existing: the claim exists, is Bound (or binds with its first pod), and has the access modes the
    run needs: those configured, else ReadWriteMany for a TrainJob's nodes (a pod at a time needs none)."""
    volume = backend.volume
    what = f"claim {volume.claim_name} in namespace {cluster.namespace}"
    try:
        claim = cluster.ask(what, cluster.core.read_namespaced_persistent_volume_claim, volume.claim_name,
                            cluster.namespace)
    except ClusterError as err:
        if err.status == 404:
            return Finding(PROBLEM, f"{what} does not exist: create it (README: the shared volume), or set "
                                    "backend.volume.claim_name to one `kubectl get pvc` lists")
        return unanswered(err, what)
    phase = claim.status.phase if claim.status else None
    modes = (claim.status.access_modes if phase == "Bound" else None) or claim.spec.access_modes or []
    needed = volume.access_modes if volume.access_modes is not None else \
        ["ReadWriteMany"] if backend.distributed == "trainjob" else []
    missing = [mode for mode in needed if mode not in modes]
    if missing:
        return Finding(PROBLEM, f"{what} has access modes {modes}, not {missing}: bind one with them, or set "
                                f"backend.volume.access_modes to what it has ({RWX_FIX})")
    if phase == "Bound":
        return Finding(OK, f"{what} is Bound ({', '.join(modes)})")
    if phase == "Pending" and _binds_on_first_use(cluster, claim.spec.storage_class_name):
        return Finding(OK, f"{what} is Pending until its first pod mounts it (WaitForFirstConsumer)")
    return Finding(PROBLEM, f"{what} is {phase}, not Bound: no volume backs it "
                            f"(kubectl describe pvc {volume.claim_name} -n {cluster.namespace})")


def _binds_on_first_use(cluster: Cluster, class_name) -> bool:
    try:
        storage_class = cluster.ask(f"storage class {class_name}", cluster.storage.read_storage_class, class_name)
    except ClusterError:
        return False
    return storage_class.volume_binding_mode == "WaitForFirstConsumer"


def _allocatable(node, resource: str) -> int:
    value = ((node.status.allocatable if node.status else None) or {}).get(resource, "0")
    return int(value) if str(value).isdigit() else 0  # extended resources are whole numbers


def check_accelerators(cluster: Cluster, backend: DictConfig, needed: int = 1) -> Finding:
    """``needed`` schedulable nodes matching backend.node_selector (one; a TrainJob's nodes each) have the
    accelerators train and test request."""
    kind, count = backend.resources.accelerator_type, backend.resources.accelerator_count
    try:
        nodes = cluster.ask("nodes", cluster.core.list_node).items
    except ClusterError as err:
        return unanswered(err, f"nodes with {count} {kind}")
    selector = dict(backend.node_selector)
    candidates = [node for node in nodes if not (node.spec and node.spec.unschedulable)
                  and selector.items() <= (node.metadata.labels or {}).items()]
    best = max(candidates, key=lambda node: _allocatable(node, kind), default=None)
    most = _allocatable(best, kind) if best else 0
    enough = [node.metadata.name for node in candidates if _allocatable(node, kind) >= count]
    if needed > 1:
        if len(enough) >= needed:
            return Finding(OK, f"{len(enough)} nodes have {count} {kind} allocatable (the TrainJob's {needed} nodes "
                               f"ask for {count} each): {', '.join(sorted(enough))}")
        return Finding(PROBLEM, f"{len(enough)} of the {len(candidates)} schedulable nodes have {count} {kind} "
                                f"allocatable, and the TrainJob's {needed} nodes ask for {count} each: it would stay "
                                "Pending; lower dist.nnodes or backend.resources.accelerator_count, or fix "
                                "backend.node_selector")
    if most >= count:
        return Finding(OK, f"node {best.metadata.name} has {most} {kind} allocatable (train and test ask for {count})")
    where = f"of the {len(candidates)} schedulable nodes matching backend.node_selector" if selector else \
        f"of the {len(candidates)} schedulable nodes"
    return Finding(PROBLEM, f"no node {where} has {count} {kind} allocatable (at most {most}): train would stay "
                            "Pending; lower backend.resources.accelerator_count (0: train on CPU), fix "
                            "backend.node_selector, or install the device plugin")


def check_pull_secret(cluster: Cluster, name: str) -> Finding:
    what = f"image pull secret {name} in namespace {cluster.namespace}"
    try:
        secret = cluster.ask(what, cluster.core.read_namespaced_secret, name, cluster.namespace)
    except ClusterError as err:
        if err.status == 404:
            return Finding(PROBLEM, f"{what} does not exist: pods would fail to pull the image; create it "
                                    f"(kubectl create secret docker-registry {name} -n {cluster.namespace} ...) "
                                    "or fix backend.image_pull_secrets")
        return unanswered(err, what)
    if secret.type not in PULL_SECRET_TYPES:
        return Finding(PROBLEM, f"{what} is of type {secret.type}, not a registry credential "
                                f"({' or '.join(PULL_SECRET_TYPES)})")
    return Finding(OK, f"{what} exists")


def check_kfp_api(backend: DictConfig) -> list[Finding]:
    """The KFP API answers; its release honours the pods' security context where the run counts on it."""
    if host_from_config(backend) is None:
        return [Finding(NOT_CHECKED, "KFP API: set backend.host (or KF_PIPELINES_ENDPOINT) to check it")]
    target = target_from_config(None, backend)
    try:
        health = check_reachable(target)
    except KfpError as err:
        return [Finding(PROBLEM, f"KFP API: {err}")]
    mode = "multi-user" if health.get("multi_user") else "single-user"
    findings = [Finding(OK, f"KFP API at {target.host} answers (KFP {health.get('tag_name', 'unknown')}, {mode})")]
    warning = security_context_ignored(health, backend)
    return findings + [Finding(WARNING, warning)] if warning else findings


def run_checks(cfg: DictConfig, cluster: Cluster, kfp_api: bool = True) -> list[Finding]:
    """Every question that applies to ``cfg``'s backend, in the order a run meets them."""
    backend, volume = cfg.backend, cfg.backend.volume
    nodes = cfg.dist.nnodes if backend.distributed == "trainjob" else 1  # each with the accelerators
    findings = [check_namespace(cluster, volume)]
    if volume.mode == "existing":
        findings.append(check_claim(cluster, backend))
    else:
        findings.append(check_storage_class(cluster, backend))
    if backend.distributed == "trainjob":
        from backends.kfp.trainjob.preflight import check_trainer, check_trainjob_accepted, check_trainjob_rights

        trainer = check_trainer(cluster, backend.trainjob)
        findings += [trainer, check_trainjob_rights(cluster, backend.trainjob)]
        if trainer.verdict == OK:  # the dry run asks Trainer's API and webhook: only where they are
            findings.append(check_trainjob_accepted(cluster, cfg))
    if backend.resources.accelerator_count > 0:
        findings.append(check_accelerators(cluster, backend, nodes))
    findings += [check_pull_secret(cluster, name) for name in backend.image_pull_secrets]
    if backend.serve.enabled:
        from backends.kfp.serving.preflight import check_kserve, check_serve_rights

        findings += [check_kserve(cluster), check_serve_rights(cluster, backend.serve)]
    if kfp_api:
        findings += check_kfp_api(backend)
    return findings


def report(findings: list[Finding], doing: str) -> None:
    """Print one line per finding; PreflightFailed when any is a problem."""
    for finding in findings:
        print(f"preflight: {finding.verdict}: {finding.text}", flush=True)
    problems = sum(finding.verdict == PROBLEM for finding in findings)
    if problems:
        raise PreflightFailed(f"preflight: {problems} of {len(findings)} checks found what would make a run stall "
                              f"(the lines above); {doing}")

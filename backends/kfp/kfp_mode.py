"""Standalone KFP or a full Kubeflow platform (multi-user: profiles, Istio): the defaults each one needs.

The API server's healthz says which (``multi_user``). Multi-user KFP runs pipelines in profile
namespaces, never in ``kubeflow``, as each profile's ``default-editor`` account; standalone KFP runs them
in ``kubeflow`` as ``pipeline-runner``. So with ``multi_user`` the runs' namespace, when
``backend.namespace`` names none, is the kubeconfig context's (a profile user's context names theirs),
and the accounts left at standalone's ``pipeline-runner`` become ``default-editor``.
"""
import logging
import os
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from backends.kfp.cluster.access import cluster_access, kubeconfig_files
from backends.kfp.submitting.endpoint import KfpError, target_from_config
from mmclf.errors import ConfigError

log = logging.getLogger(__name__)
STANDALONE_ACCOUNT, PROFILE_ACCOUNT = "pipeline-runner", "default-editor"
ACCOUNT_KEYS = ("backend.trainjob.service_account", "backend.serve.service_account")


def context_namespace(kube_context: Optional[str]) -> Optional[str]:
    """The namespace the kubeconfig context (``kube_context``, else the current one) names, if any."""
    if cluster_access() != "kubeconfig":
        return None
    from kubernetes import config  # the client: only for a multi-user KFP

    # every file $KUBECONFIG lists, merged, as connect() reads them
    contexts, current = config.list_kube_config_contexts(config_file=os.pathsep.join(kubeconfig_files()))
    chosen = next((c for c in contexts if c["name"] == kube_context), current) if kube_context else current
    return (chosen or {}).get("context", {}).get("namespace")


def follow_kfp_mode(cfg: DictConfig) -> None:
    """Ask healthz whether KFP is multi-user and set the namespace and accounts that follow in ``cfg``.
    An unreachable KFP changes nothing here: the preflight and submit say so themselves."""
    from backends.kfp.submitting.client import check_reachable

    backend = cfg.backend
    try:
        health = check_reachable(target_from_config(None, backend))
    except KfpError:
        return
    if not health.get("multi_user"):
        return
    namespace = backend.namespace or context_namespace(backend.kube_context)
    if not namespace or namespace == "kubeflow":
        raise ConfigError("backend.namespace: this KFP is multi-user (Kubeflow profiles), whose runs go to a "
                          f"profile's namespace, not {namespace or 'kubeflow (the default)'}; set "
                          "backend.namespace=<your profile's namespace> (kubectl get profiles), or the namespace of "
                          "your kubeconfig context (kubectl config set-context --current --namespace=<it>)")
    if not backend.namespace:
        log.info("multi-user KFP: runs go to namespace %s, your kubeconfig context's (backend.namespace)", namespace)
    OmegaConf.update(cfg, "backend.namespace", namespace)
    for key in ACCOUNT_KEYS:
        if OmegaConf.select(cfg, key) == STANDALONE_ACCOUNT:
            OmegaConf.update(cfg, key, PROFILE_ACCOUNT)
    log.info("multi-user KFP: pods run as %s, a profile namespace's account (%s)", PROFILE_ACCOUNT,
             ", ".join(ACCOUNT_KEYS))

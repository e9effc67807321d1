"""Asking the Kubernetes cluster before a run: the default StorageClass, and the preflight's questions.

Through the ``kubernetes`` Python client that kfp depends on, and only when cluster access is
configured: a kubeconfig ($KUBECONFIG or ~/.kube/config, context ``backend.kube_context``) or a
pod's service account. Every call has short timeouts and no retries, so a dead cluster fails in seconds.
"""
import json
import os
from dataclasses import dataclass
from typing import Optional

import urllib3
from kubernetes import client, config
from omegaconf import DictConfig

from backends.kfp.cluster.access import cluster_access, kubeconfig_files
from backends.kfp.submitting.endpoint import CONNECT_S, READ_S, KfpError
from mmclf.errors import ConfigError

# Kubernetes' own rule (pkg/volume/util/storageclass.go): either annotation, value exactly "true".
DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                             "storageclass.beta.kubernetes.io/is-default-class")
KFP_NAMESPACE = "kubeflow"  # where single-user KFP runs its pods: the namespace checked without backend.namespace


class ClusterError(KfpError):
    """The cluster could not be reached, or refused a request; ``status`` is the HTTP status, if any."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Cluster:
    """A connection to the cluster, and the namespace the runs' pods go to."""

    api: client.ApiClient
    name: str  # the kube context, or "in-cluster", for messages
    namespace: str

    def ask(self, what: str, method, *args, **options):
        """``method(*args, **options)`` of a kubernetes API class; ClusterError naming ``what`` on failure."""
        try:
            return method(*args, _request_timeout=(CONNECT_S, READ_S), **options)
        except client.ApiException as exc:
            raise ClusterError(f"the cluster ({self.name}) answered HTTP {exc.status} to reading {what}: "
                               f"{api_message(exc)}", exc.status) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ClusterError(f"cannot reach the cluster ({self.name}) at {self.api.configuration.host} to read "
                               f"{what} ({getattr(exc, 'reason', None) or exc})") from exc

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def storage(self) -> client.StorageV1Api:
        return client.StorageV1Api(self.api)


def api_message(exc: client.ApiException) -> str:
    """The message of the metav1.Status body Kubernetes answers errors with, else the reason."""
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(exc.reason)


def connect(backend: DictConfig) -> Cluster:
    """A client for the cluster ``cluster_access()`` found; ConfigError for a kubeconfig it cannot use."""
    configuration = client.Configuration()
    if cluster_access() == "in-cluster":
        config.load_incluster_config(client_configuration=configuration)
        name = "in-cluster"
    else:
        files = os.pathsep.join(kubeconfig_files())
        try:
            config.load_kube_config(config_file=files, context=backend.kube_context,
                                    client_configuration=configuration, persist_config=False)
            context = backend.kube_context or config.list_kube_config_contexts(config_file=files)[1]["name"]
        except config.ConfigException as exc:
            raise ConfigError(f"backend.kube_context={backend.kube_context}: cannot use the kubeconfig {files} "
                              f"({exc}); `kubectl config get-contexts` lists the contexts") from exc
        name = f"kube context {context}"
    configuration.retries = False  # one attempt: the timeouts above bound every call
    return Cluster(client.ApiClient(configuration), name, backend.namespace or KFP_NAMESPACE)


def _is_default(storage_class: client.V1StorageClass) -> bool:
    annotations = storage_class.metadata.annotations or {}
    return any(annotations.get(key) == "true" for key in DEFAULT_CLASS_ANNOTATIONS)


def default_storage_class(cluster: Cluster) -> Optional[client.V1StorageClass]:
    """The class Kubernetes gives a claim that names none: of those marked default, the newest
    (then the first by name, as Kubernetes picks); None when no class is marked default."""
    classes = cluster.ask("storage classes", cluster.storage.list_storage_class).items
    defaults = sorted((c for c in classes if _is_default(c)), key=lambda c: c.metadata.name)
    return max(defaults, key=lambda c: c.metadata.creation_timestamp.timestamp(), default=None)

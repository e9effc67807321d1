"""Whether this process can reach a Kubernetes cluster, known without the network and without the
``kubernetes`` client (whose import alone takes longer than compiling: kube.py imports it only
when there is a cluster to ask)."""
import os
from pathlib import Path
from typing import Optional

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def kubeconfig_files() -> list[str]:
    """The kubeconfig files kubectl would read: $KUBECONFIG's, else ~/.kube/config, those that exist."""
    listed = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    return [path for path in listed.split(os.pathsep) if path and Path(path).is_file()]


def cluster_access() -> Optional[str]:
    """How this process can reach a cluster: ``in-cluster`` (a pod's service account), ``kubeconfig``,
    or None."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and SERVICE_ACCOUNT_TOKEN.is_file():
        return "in-cluster"
    return "kubeconfig" if kubeconfig_files() else None

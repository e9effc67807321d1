"""A loopback fake of the Kubernetes API server: the few reads backends/kfp/cluster.py and preflight.py make.

A real HTTP server on 127.0.0.1 (a random free port) in a background thread; the real ``kubernetes``
client reaches it through a kubeconfig the test writes (``write_kubeconfig``). Objects have the
Kubernetes API's shapes (core/v1 Namespace, Node, PersistentVolumeClaim, Secret; storage.k8s.io/v1
StorageClass; lists as ``<Kind>List`` with ``items``), and errors are the ``metav1.Status`` bodies the
API server answers with: ``{"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
"message": "namespaces \\"x\\" not found", ...}``. Every request is recorded for tests to assert on.
"""
import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Optional

import yaml

from tests.loopback import LoopbackServer

DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
CREATED = "2026-01-05T10:00:00Z"

_CORE, _STORAGE = "/api/v1", "/apis/storage.k8s.io/v1"


def namespace(name: str, labels: Optional[dict] = None) -> dict:
    return {"metadata": {"name": name, "labels": labels or {"kubernetes.io/metadata.name": name},
                         "creationTimestamp": CREATED}, "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}}


def storage_class(name: str, provisioner: str, default: bool = False, created: str = CREATED,
                  binding_mode: str = "WaitForFirstConsumer") -> dict:
    annotations = {DEFAULT_CLASS: "true"} if default else {}
    return {"metadata": {"name": name, "annotations": annotations, "creationTimestamp": created},
            "provisioner": provisioner, "reclaimPolicy": "Delete", "volumeBindingMode": binding_mode}


def node(name: str, allocatable: dict, labels: Optional[dict] = None, unschedulable: bool = False) -> dict:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})},
                         "creationTimestamp": CREATED},
            "spec": {"unschedulable": True} if unschedulable else {},
            "status": {"capacity": dict(allocatable), "allocatable": dict(allocatable)}}


def claim(name: str, phase: str, access_modes: list, class_name: str = "nfs-client") -> dict:
    spec = {"accessModes": access_modes, "storageClassName": class_name, "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": "20Gi"}}}
    status = {"phase": phase}
    if phase == "Bound":  # a bound claim names its volume and reports what it got
        spec["volumeName"] = f"pvc-{name}"
        status.update(accessModes=access_modes, capacity={"storage": "20Gi"})
    return {"metadata": {"name": name, "creationTimestamp": CREATED}, "spec": spec, "status": status}


def secret(name: str, type_: str = "kubernetes.io/dockerconfigjson") -> dict:
    return {"metadata": {"name": name, "creationTimestamp": CREATED}, "type": type_,
            "data": {".dockerconfigjson": "e30="}}


def write_kubeconfig(path, server: str, token: str, context: str = "fake-cluster") -> str:
    """A kubeconfig whose current context is the API server at ``server``, authenticated by bearer token."""
    kubeconfig = {"apiVersion": "v1", "kind": "Config", "current-context": context,
                  "clusters": [{"name": "fake", "cluster": {"server": server}}],
                  "users": [{"name": "tester", "user": {"token": token}}],
                  "contexts": [{"name": context, "context": {"cluster": "fake", "user": "tester"}}]}
    path.write_text(yaml.safe_dump(kubeconfig))
    return str(path)


def _status(code: int, reason: str, message: str, details: Optional[dict] = None) -> tuple[int, dict]:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    if details:
        body["details"] = details
    return code, body


@dataclass
class FakeKubernetes(LoopbackServer):
    """Configure the cluster's objects, then ``with FakeKubernetes(...) as cluster:`` and write a kubeconfig.

    forbidden: resources (``namespaces``, ``nodes``, ``storageclasses``, ``persistentvolumeclaims``,
    ``secrets``) that the token may not read: 403, as RBAC answers.
    """

    namespaces: list = field(default_factory=lambda: [namespace("kubeflow")])
    storage_classes: list = field(default_factory=list)
    nodes: list = field(default_factory=list)
    claims: list = field(default_factory=list)  # in namespace ``claims_namespace``
    secrets: list = field(default_factory=list)  # in namespace ``claims_namespace``
    claims_namespace: str = "kubeflow"
    forbidden: set = field(default_factory=set)
    token: str = "fake-cluster-token"
    requests: list = field(default_factory=list)

    def __post_init__(self):
        self._serve(_Handler)

    def write_kubeconfig(self, path, context: str = "fake-cluster") -> str:
        return write_kubeconfig(path, self.url, self.token, context)

    # --- request handling (called from the server's threads) -----------------------------------

    def _routes(self) -> list:
        """(path prefix, resource, kind, apiVersion, objects by name) of each resource served."""
        ns = f"{_CORE}/namespaces/{self.claims_namespace}"
        return [(f"{ns}/persistentvolumeclaims", "persistentvolumeclaims", "PersistentVolumeClaim", "v1",
                 _by_name(self.claims)),
                (f"{ns}/secrets", "secrets", "Secret", "v1", _by_name(self.secrets)),
                (f"{_CORE}/namespaces", "namespaces", "Namespace", "v1", _by_name(self.namespaces)),
                (f"{_CORE}/nodes", "nodes", "Node", "v1", _by_name(self.nodes)),
                (f"{_STORAGE}/storageclasses", "storageclasses", "StorageClass", "storage.k8s.io/v1",
                 _by_name(self.storage_classes))]

    def handle(self, method: str, path: str, headers: dict) -> tuple[int, dict]:
        self.requests.append((method, path))
        if headers.get("authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        for prefix, resource, kind, api_version, objects in self._routes():
            if path != prefix and not path.startswith(prefix + "/"):
                continue
            name = path[len(prefix) + 1:]
            verb = "get" if name else "list"
            if resource in self.forbidden:
                return self._forbidden(resource, name, verb, api_version, namespaced="/namespaces/" in prefix)
            if not name:
                items = [{"apiVersion": api_version, "kind": kind, **o} for o in objects.values()]
                return 200, {"apiVersion": api_version, "kind": f"{kind}List", "metadata": {"resourceVersion": "1"},
                             "items": items}
            if name not in objects:
                return _status(404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": resource})
            return 200, {"apiVersion": api_version, "kind": kind, **objects[name]}
        return _status(404, "NotFound", "the server could not find the requested resource")


    def _forbidden(self, resource: str, name: str, verb: str, api_version: str, namespaced: bool):
        scope = f'in the namespace "{self.claims_namespace}"' if namespaced else "at the cluster scope"
        what = f'{resource} "{name}"' if name else resource
        group = api_version.rpartition("/")[0]
        return _status(403, "Forbidden", f'{what} is forbidden: User "system:serviceaccount:kubeflow:tester" cannot '
                       f'{verb} resource "{resource}" in API group "{group}" {scope}', {"name": name, "kind": resource})


def _by_name(objects: list) -> dict:
    return {o["metadata"]["name"]: o for o in objects}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0]
        code, body = self.server.fake.handle("GET", path, {k.lower(): v for k, v in self.headers.items()})
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # quiet
        pass

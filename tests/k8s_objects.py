"""Kubernetes objects as the API server returns them (core/v1 Namespace, Node, PersistentVolumeClaim,
Secret, Event; storage.k8s.io/v1 StorageClass) and its error body (metav1.Status), for the loopback
fakes (k8s_server.py, k8s_kserve.py) and the tests that configure them."""
from typing import Optional

DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
CREATED = "2026-01-05T10:00:00Z"


def status(code: int, reason: str, message: str, details: Optional[dict] = None) -> tuple[int, dict]:
    """(code, the metav1.Status body the API server answers an error with)."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    if details:
        body["details"] = details
    return code, body


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


def claim(name: str, phase: str, access_modes: list, class_name: str = "nfs-client", created: str = CREATED) -> dict:
    spec = {"accessModes": access_modes, "storageClassName": class_name, "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": "20Gi"}}}
    status = {"phase": phase}
    if phase == "Bound":  # a bound claim names its volume and reports what it got
        spec["volumeName"] = f"pvc-{name}"
        status.update(accessModes=access_modes, capacity={"storage": "20Gi"})
    return {"metadata": {"name": name, "creationTimestamp": created}, "spec": spec, "status": status}


def secret(name: str, type_: str = "kubernetes.io/dockerconfigjson") -> dict:
    return {"metadata": {"name": name, "creationTimestamp": CREATED}, "type": type_,
            "data": {".dockerconfigjson": "e30="}}


def event(name: str, kind: str, object_name: str, reason: str, message: str, when: str = CREATED,
          type_: str = "Warning") -> dict:
    """A core/v1 Event as the API server lists it: what happened to ``kind`` ``object_name``."""
    return {"metadata": {"name": name, "creationTimestamp": when}, "type": type_, "reason": reason,
            "message": message, "lastTimestamp": when, "count": 1,
            "involvedObject": {"kind": kind, "name": object_name, "apiVersion": "v1"}}

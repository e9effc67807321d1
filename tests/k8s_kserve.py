"""KServe's InferenceServices (``serving.kserve.io/v1beta1``) in the loopback Kubernetes API of k8s_server.py,
and a check of a manifest's field names against KServe's own Python models (the ``kserve`` package).

The fake answers as the API server does for a custom resource: discovery of the group version; create
(201; 409 AlreadyExists for a taken name; with ``fieldValidation=Strict``, 400 BadRequest naming a field
the type does not declare: "strict decoding error: unknown field"); get; replace (PUT), which must carry
the current ``metadata.resourceVersion`` (422 Invalid without one, 409 Conflict for an old one: custom
resources allow no unconditional update); 404 for everything when KServe is not installed.
"""
import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import parse_qs

import numpy as np

from tests.k8s_objects import CREATED, status
from tests.loopback import LoopbackServer

GROUP_VERSION = "serving.kserve.io/v1beta1"
PREFIX = f"/apis/{GROUP_VERSION}"
RESOURCE = "inferenceservices.serving.kserve.io"
CLUSTER_URL = "http://pets-predictor.kubeflow.svc.cluster.local"  # an address only the cluster resolves


def _model_class(name: str):
    import kserve.models
    from kubernetes.client import models

    return getattr(kserve.models, name, None) or getattr(models, name, None)


PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float)}


def kserve_problems(data, klass: str = "V1beta1InferenceService", path: str = "", types: bool = True) -> list[str]:
    """The fields of ``data`` (a manifest, as JSON) that KServe's model ``klass`` and the Kubernetes models it
    nests do not declare, and (``types``) values of another type than they declare; [] when it fits."""
    if klass.startswith("list["):
        return [p for i, item in enumerate(data) for p in kserve_problems(item, klass[5:-1], f"{path}[{i}]", types)]
    if klass.startswith("dict("):
        inner = klass[5:-1].split(", ", 1)[1]
        return [p for key, item in data.items() for p in kserve_problems(item, inner, f"{path}.{key}", types)]
    if klass in PRIMITIVES:
        fits = isinstance(data, PRIMITIVES[klass]) and not (klass != "bool" and isinstance(data, bool))
        return [] if fits or not types else [f"{path.lstrip('.')}: {data!r} is not {klass}"]
    model = _model_class(klass)
    if model is None:  # object, datetime: anything goes
        return []
    if not isinstance(data, dict):
        return [f"{path.lstrip('.')}: {data!r} is not an object ({klass})"] if types else []
    names = {json_name: attr for attr, json_name in model.attribute_map.items()}
    problems = [f'unknown field "{path.lstrip(".") + "." if path else ""}{key}"' for key in data if key not in names]
    for key, item in data.items():
        if key in names:
            problems += kserve_problems(item, model.openapi_types[names[key]], f"{path}.{key}", types)
    return problems


def ready(url: Optional[str]) -> dict:
    """The status of a service that came up, reachable at ``url`` inside the cluster."""
    conditions = [{"type": kind, "status": "True", "lastTransitionTime": CREATED}
                  for kind in ("IngressReady", "PredictorReady", "Ready")]
    return {"conditions": conditions, "address": {"url": url}, "url": url, "modelStatus": {
        "transitionStatus": "UpToDate", "states": {"activeModelState": "Loaded", "targetModelState": ""}}}


def coming_up(reason: str = "", message: str = "") -> dict:
    """A service whose predictor is not Ready (yet), with the condition's reason when given."""
    predictor = {"type": "PredictorReady", "status": "Unknown" if not reason else "False", "reason": reason,
                 "message": message}
    return {"conditions": [{**predictor, "type": "Ready"}, predictor], "modelStatus": {
        "transitionStatus": "InProgress", "states": {"activeModelState": "Pending", "targetModelState": "Loading"}}}


def failed_to_load(reason: str, message: str, pod: str) -> dict:
    """A model the runtime could not load: KServe blocks the transition and keeps the last failure."""
    failed = {**coming_up("ModelLoadFailed", message), "modelStatus": {
        "transitionStatus": "BlockedByFailedLoad", "states": {"activeModelState": "FailedToLoad"},
        "lastFailureInfo": {"reason": reason, "message": message, "location": pod}}}
    return failed


@dataclass
class FakeKServe:
    """KServe in the fake cluster: InferenceServices by name, in the fake's namespace."""

    installed: bool = True
    services: dict = field(default_factory=dict)
    writes: list = field(default_factory=list)  # (method, query parameters, body) of each create and replace
    statuses: list = field(default_factory=lambda: [ready(CLUSTER_URL)])  # one per read; the last stays
    _versions: int = 0

    def handle(self, method: str, rest: str, body: Optional[dict], query: str, namespace: str,
               forbidden: Callable) -> Optional[tuple[int, dict]]:
        """The answer to ``method`` on ``/apis/serving.kserve.io/v1beta1<rest>``."""
        if not self.installed:
            return status(404, "NotFound", "the server could not find the requested resource")
        if rest == "" and method == "GET":
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION,
                         "resources": [{"name": "inferenceservices", "singularName": "inferenceservice",
                                        "namespaced": True, "kind": "InferenceService", "shortNames": ["isvc"],
                                        "verbs": ["delete", "deletecollection", "get", "list", "patch", "create",
                                                  "update", "watch"]}]}
        prefix = f"/namespaces/{namespace}/inferenceservices"
        if rest != prefix and not rest.startswith(prefix + "/"):
            return status(404, "NotFound", "the server could not find the requested resource")
        name = rest[len(prefix) + 1:]
        verb = {"POST": "create", "PUT": "update"}.get(method, "get")
        refused = forbidden("inferenceservices", name, verb)
        if refused:
            return refused
        if method == "POST" and not name:
            return self._create(body, parse_qs(query))
        if name not in self.services:
            return status(404, "NotFound", f'{RESOURCE} "{name}" not found')
        if method == "GET":
            current = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            return 200, {**self.services[name], "status": current}
        if method == "PUT":
            return self._replace(name, body, parse_qs(query))
        return status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _strict(self, body: dict, query: dict) -> Optional[tuple[int, dict]]:
        unknown = kserve_problems(body, types=False)
        if query.get("fieldValidation") == ["Strict"] and unknown:
            return status(400, "BadRequest", 'InferenceService in version "v1beta1" cannot be handled as a '
                                              f"InferenceService: strict decoding error: {', '.join(unknown)}")
        return None

    def _stored(self, body: dict) -> dict:
        self._versions += 1
        metadata = {**body["metadata"], "uid": f"uid-{body['metadata']['name']}", "creationTimestamp": CREATED,
                    "resourceVersion": str(self._versions), "generation": 1}
        self.services[metadata["name"]] = {**body, "metadata": metadata}
        return self.services[metadata["name"]]

    def _create(self, body: dict, query: dict) -> tuple[int, dict]:
        self.writes.append(("POST", query, body))
        name = body["metadata"]["name"]
        refused = self._strict(body, query)  # decoding comes first
        if refused or name not in self.services:
            return refused or (201, self._stored(body))
        return status(409, "AlreadyExists", f'{RESOURCE} "{name}" already exists',
                       {"name": name, "group": "serving.kserve.io", "kind": "inferenceservices"})

    def _replace(self, name: str, body: dict, query: dict) -> tuple[int, dict]:
        self.writes.append(("PUT", query, body))
        refused = self._strict(body, query)  # decoding comes first
        if refused:
            return refused
        version = body["metadata"].get("resourceVersion")
        if not version:
            return status(422, "Invalid", f'InferenceService.serving.kserve.io "{name}" is invalid: '
                                           "metadata.resourceVersion: Invalid value: 0x0: must be specified for an "
                                           "update", {"name": name, "group": "serving.kserve.io",
                                                      "kind": "InferenceService"})
        if version != self.services[name]["metadata"]["resourceVersion"]:
            return status(409, "Conflict", f'Operation cannot be fulfilled on {RESOURCE} "{name}": the object has '
                                            "been modified; please apply your changes to the latest version and try "
                                            "again")
        return 200, self._stored(body)


@dataclass
class FakeTriton(LoopbackServer):
    """The predictor's v2 endpoint, scoring with ``model`` (a model.onnx path, read at each request) or
    answering ``scores`` (an array) instead."""

    model: Path
    scores: Optional[np.ndarray] = None
    requests: list = field(default_factory=list)

    def __post_init__(self):
        self._serve(_TritonHandler)

    def answer(self, body: dict) -> dict:
        import onnxruntime

        (tensor,) = body["inputs"]
        images = np.asarray(tensor["data"], dtype=np.uint8).reshape(tensor["shape"])
        self.requests.append(images.shape)
        scores = self.scores
        if scores is None:
            session = onnxruntime.InferenceSession(str(self.model), providers=["CPUExecutionProvider"])
            scores = session.run(["scores"], {"images": images})[0]
        return {"model_name": "mmclf", "outputs": [{"name": "scores", "datatype": "FP32",
                                                    "shape": list(scores.shape), "data": scores.ravel().tolist()}]}


class _TritonHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        if self.path != "/v2/models/mmclf/infer":
            return self._send(404, {"error": f"no model at {self.path}"})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._send(200, self.server.fake.answer(body))

    def _send(self, code: int, payload: dict):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # quiet
        pass

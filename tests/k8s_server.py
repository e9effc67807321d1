"""A loopback fake of the Kubernetes API server: the few reads backends/kfp/cluster/kube.py and preflight.py make,
the TrainJobs (``trainer.kubeflow.org/v1alpha1``) backends/kfp/trainjob/launcher.py creates, reads and deletes, and
the InferenceServices backends/kfp/serving/serve_task.py creates and replaces (k8s_kserve.py).

A real HTTP server on 127.0.0.1 (a random free port) in a background thread; the real ``kubernetes``
client reaches it through a kubeconfig the test writes (``write_kubeconfig``). Objects have the
Kubernetes API's shapes (k8s_objects.py; Trainer's in k8s_trainer.py; lists as ``<Kind>List`` with
``items``), and errors are the ``metav1.Status`` bodies the API server answers with
(``k8s_objects.status``). Every request is recorded for tests to assert on.

TrainJobs follow a script: the n-th read after the create answers ``trainjob_statuses[n]`` as the
object's status (the last one from then on), as Kubeflow Trainer v2.3's controller reports them:
conditions of type Suspended, Complete or Failed, and ``jobsStatus`` counts per replicated job.
"""
import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Optional
from urllib.parse import parse_qs

import yaml

from tests import k8s_kserve, k8s_trainer
from tests.k8s_objects import CREATED, namespace, status
from tests.k8s_trainer import COMPLETE, training_runtime
from tests.loopback import LoopbackServer

_CORE, _STORAGE = "/api/v1", "/apis/storage.k8s.io/v1"
_TRAINER_GV = "trainer.kubeflow.org/v1alpha1"
_TRAINER = f"/apis/{_TRAINER_GV}"
_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
_SELF_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"  # any authenticated user may


def write_kubeconfig(path, server: str, token: str, context: str = "fake-cluster",
                     namespace: Optional[str] = None) -> str:
    """A kubeconfig whose current context is the API server at ``server``, authenticated by bearer token,
    naming ``namespace`` when given (as a Kubeflow profile user's context names their profile's)."""
    named = {"namespace": namespace} if namespace else {}
    kubeconfig = {"apiVersion": "v1", "kind": "Config", "current-context": context,
                  "clusters": [{"name": "fake", "cluster": {"server": server}}],
                  "users": [{"name": "tester", "user": {"token": token}}],
                  "contexts": [{"name": context, "context": {"cluster": "fake", "user": "tester", **named}}]}
    path.write_text(yaml.safe_dump(kubeconfig))
    return str(path)


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
    events: list = field(default_factory=list)  # in namespace ``claims_namespace`` (``event()``)
    pods: list = field(default_factory=list)  # in namespace ``claims_namespace``, listed by label selector
    pod_logs: dict = field(default_factory=dict)  # pod name -> its container's log, all of it at once
    claims_namespace: str = "kubeflow"
    forbidden: set = field(default_factory=set)
    token: str = "fake-cluster-token"
    requests: list = field(default_factory=list)
    # Kubeflow Trainer: whether its API is served, its runtimes, TrainJobs (by name) and their script
    trainer_installed: bool = True
    trainer_version: str = "v2.3"  # the TrainJob CRD served: v2.3 or v2.1 (k8s_trainer.py), for fieldValidation=Strict
    training_runtimes: list = field(default_factory=lambda: [training_runtime()])
    trainjobs: dict = field(default_factory=dict)
    trainjob_statuses: list = field(default_factory=lambda: list(COMPLETE))
    created: list = field(default_factory=list)  # the TrainJob bodies POSTed, in order
    dry_runs: list = field(default_factory=list)  # the TrainJob bodies POSTed with dryRun=All (never stored)
    deleted: list = field(default_factory=list)  # the TrainJob names DELETEd, in order
    deleted_claims: list = field(default_factory=list)  # the claim names DELETEd, in order
    denied_verbs: set = field(default_factory=set)  # SubjectAccessReviews answer allowed: false for these
    access_reviews: list = field(default_factory=list)  # the SubjectAccessReview specs asked
    self_reviews: list = field(default_factory=list)  # the SelfSubjectAccessReview specs asked
    kserve: k8s_kserve.FakeKServe = field(default_factory=k8s_kserve.FakeKServe)  # InferenceServices (k8s_kserve.py)
    _reads: dict = field(default_factory=dict)

    def __post_init__(self):
        self._serve(_Handler)

    def write_kubeconfig(self, path, context: str = "fake-cluster", namespace: Optional[str] = None) -> str:
        return write_kubeconfig(path, self.url, self.token, context, namespace)

    # --- request handling (called from the server's threads) -----------------------------------

    def _routes(self) -> list:
        """(path prefix, resource, kind, apiVersion, objects by name) of each resource served."""
        ns = f"{_CORE}/namespaces/{self.claims_namespace}"
        return [(f"{ns}/persistentvolumeclaims", "persistentvolumeclaims", "PersistentVolumeClaim", "v1",
                 _by_name(self.claims)),
                (f"{ns}/secrets", "secrets", "Secret", "v1", _by_name(self.secrets)),
                (f"{ns}/events", "events", "Event", "v1", _by_name(self.events)),
                (f"{ns}/pods", "pods", "Pod", "v1", _by_name(self.pods)),
                (f"{_CORE}/namespaces", "namespaces", "Namespace", "v1", _by_name(self.namespaces)),
                (f"{_CORE}/nodes", "nodes", "Node", "v1", _by_name(self.nodes)),
                (f"{_STORAGE}/storageclasses", "storageclasses", "StorageClass", "storage.k8s.io/v1",
                 _by_name(self.storage_classes))]

    def handle(self, method: str, path: str, headers: dict, body: Optional[dict] = None, query: str = ""):
        self.requests.append((method, path))
        if headers.get("authorization") != f"Bearer {self.token}":
            return status(401, "Unauthorized", "Unauthorized")
        if path.startswith(k8s_kserve.PREFIX):
            return self.kserve.handle(method, path[len(k8s_kserve.PREFIX):], body, query, self.claims_namespace,
                                      self._forbidden_kserve)
        if path.startswith(_TRAINER):
            return self._trainer(method, path[len(_TRAINER):], body, parse_qs(query))
        if path == _ACCESS_REVIEWS and method == "POST":
            return self._access_review(body)
        if path == _SELF_ACCESS_REVIEWS and method == "POST":  # the token's own rights: as denied_verbs say
            self.self_reviews.append(body["spec"])
            return 201, {**body, "status": {"allowed": body["spec"]["resourceAttributes"]["verb"] not in
                                            self.denied_verbs}}
        claims = f"{_CORE}/namespaces/{self.claims_namespace}/persistentvolumeclaims/"
        if method == "DELETE" and path.startswith(claims):
            return self._delete_claim(path[len(claims):])
        if method != "GET":
            return status(405, "MethodNotAllowed", f"the server does not allow this method on {path}")
        logs = f"{_CORE}/namespaces/{self.claims_namespace}/pods/"
        if path.startswith(logs) and path.endswith("/log"):  # text, as the API server answers (follow: to the end)
            name = path[len(logs):-len("/log")]
            if "pods" in self.forbidden:
                return self._forbidden("pods/log", name, "get", "v1", namespaced=True)
            if name not in self.pod_logs:
                return status(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
            return 200, self.pod_logs[name]
        for prefix, resource, kind, api_version, objects in self._routes():
            if path != prefix and not path.startswith(prefix + "/"):
                continue
            name = path[len(prefix) + 1:]
            verb = "get" if name else "list"
            if resource in self.forbidden:
                return self._forbidden(resource, name, verb, api_version, namespaced="/namespaces/" in prefix)
            if not name:
                wanted = dict(pair.split("=", 1) for pair in parse_qs(query).get("labelSelector", [""])[0].split(",")
                              if pair)
                items = [{"apiVersion": api_version, "kind": kind, **o} for o in objects.values()
                         if wanted.items() <= (o["metadata"].get("labels") or {}).items()]
                return 200, {"apiVersion": api_version, "kind": f"{kind}List", "metadata": {"resourceVersion": "1"},
                             "items": items}
            if name not in objects:
                return status(404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": resource})
            return 200, {"apiVersion": api_version, "kind": kind, **objects[name]}
        return status(404, "NotFound", "the server could not find the requested resource")


    def _trainer(self, method: str, rest: str, body: Optional[dict], query: dict) -> tuple[int, dict]:
        """trainer.kubeflow.org/v1alpha1: discovery, ClusterTrainingRuntimes, and TrainJobs in claims_namespace."""
        if not self.trainer_installed:
            return status(404, "NotFound", "the server could not find the requested resource")
        if rest == "" and method == "GET":
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": _TRAINER_GV,
                         "resources": [{"name": "trainjobs", "singularName": "trainjob", "namespaced": True,
                                        "kind": "TrainJob",
                                        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]},
                                       {"name": "clustertrainingruntimes", "singularName": "clustertrainingruntime",
                                        "namespaced": False,
                                        "kind": "ClusterTrainingRuntime", "verbs": ["get", "list"]}]}
        if rest.startswith("/clustertrainingruntimes/") and method == "GET":
            name = rest.rsplit("/", 1)[1]
            if "clustertrainingruntimes" in self.forbidden:
                return self._forbidden("clustertrainingruntimes", name, "get", "trainer.kubeflow.org/v1alpha1", False)
            runtimes = _by_name(self.training_runtimes)
            if name not in runtimes:
                return status(404, "NotFound", f'clustertrainingruntimes.trainer.kubeflow.org "{name}" not found')
            return 200, {"apiVersion": _TRAINER_GV, "kind": "ClusterTrainingRuntime", **runtimes[name]}
        prefix = f"/namespaces/{self.claims_namespace}/trainjobs"
        if rest != prefix and not rest.startswith(prefix + "/"):
            return status(404, "NotFound", "the server could not find the requested resource")
        if "trainjobs" in self.forbidden:
            verb = {"POST": "create", "DELETE": "delete"}.get(method, "get")
            return self._forbidden("trainjobs", rest[len(prefix) + 1:], verb, _TRAINER_GV, True)
        name = rest[len(prefix) + 1:]
        if method == "POST" and not name:
            return self._create_trainjob(body, query)
        if method == "GET" and not name:  # a list, by label selector
            wanted = dict(pair.split("=", 1) for pair in query.get("labelSelector", [""])[0].split(",") if pair)
            items = [job for job in self.trainjobs.values()
                     if wanted.items() <= (job["metadata"].get("labels") or {}).items()]
            return 200, {"apiVersion": _TRAINER_GV, "kind": "TrainJobList", "metadata": {}, "items": items}
        if name not in self.trainjobs:
            return status(404, "NotFound", f'trainjobs.trainer.kubeflow.org "{name}" not found')
        if method == "GET":
            reads = self._reads[name] = self._reads.get(name, -1) + 1
            script = self.trainjob_statuses
            return 200, {**self.trainjobs[name], "status": script[min(reads, len(script) - 1)] if script else {}}
        if method == "DELETE":
            self.deleted.append(name)
            del self.trainjobs[name]
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name}}
        return status(405, "MethodNotAllowed", "the server does not allow this method")

    def _create_trainjob(self, body: dict, query: dict) -> tuple[int, dict]:
        name = body["metadata"]["name"]
        # Decoding comes first: with Strict, a field the served CRD lacks refuses the create (else it is dropped).
        unknown = k8s_trainer.strict_decoding_error(body, self.trainer_version)
        if unknown and query.get("fieldValidation") == ["Strict"]:
            return status(400, "BadRequest", unknown)
        if name in self.trainjobs:
            return status(409, "AlreadyExists", f'trainjobs.trainer.kubeflow.org "{name}" already exists',
                           {"name": name, "group": "trainer.kubeflow.org", "kind": "trainjobs"})
        if query.get("dryRun") == ["All"]:  # every check a create makes, then nothing stored
            self.dry_runs.append(body)
            return 201, {**body, "metadata": {**body["metadata"], "uid": "dry-run", "creationTimestamp": CREATED}}
        self.created.append(body)
        self._reads[name] = -1
        metadata = {**body["metadata"], "uid": f"uid-{len(self.created)}", "creationTimestamp": CREATED}
        self.trainjobs[name] = {**body, "metadata": metadata}
        return 201, self.trainjobs[name]

    def _delete_claim(self, name: str) -> tuple[int, dict]:
        if "persistentvolumeclaims" in self.forbidden:
            return self._forbidden("persistentvolumeclaims", name, "delete", "v1", namespaced=True)
        kept = [claim for claim in self.claims if claim["metadata"]["name"] != name]
        if len(kept) == len(self.claims):
            return status(404, "NotFound", f'persistentvolumeclaims "{name}" not found')
        self.claims[:] = kept
        self.deleted_claims.append(name)
        return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name}}

    def _access_review(self, body: dict) -> tuple[int, dict]:
        if "subjectaccessreviews" in self.forbidden:
            return self._forbidden("subjectaccessreviews", "", "create", "authorization.k8s.io/v1", False)
        self.access_reviews.append(body["spec"])
        allowed = body["spec"]["resourceAttributes"]["verb"] not in self.denied_verbs
        return 201, {**body, "status": {"allowed": allowed}}

    def _forbidden_kserve(self, resource: str, name: str, verb: str):
        if resource in self.forbidden:
            return self._forbidden(resource, name, verb, "serving.kserve.io/v1beta1", True)
        return None

    def _forbidden(self, resource: str, name: str, verb: str, api_version: str, namespaced: bool):
        scope = f'in the namespace "{self.claims_namespace}"' if namespaced else "at the cluster scope"
        what = f'{resource} "{name}"' if name else resource
        group = api_version.rpartition("/")[0]
        return status(403, "Forbidden", f'{what} is forbidden: User "system:serviceaccount:kubeflow:tester" cannot '
                       f'{verb} resource "{resource}" in API group "{group}" {scope}', {"name": name, "kind": resource})


def _by_name(objects: list) -> dict:
    return {o["metadata"]["name"]: o for o in objects}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self._answer("GET")

    def do_POST(self):  # noqa: N802
        self._answer("POST")

    def do_DELETE(self):  # noqa: N802
        self._answer("DELETE")

    def do_PUT(self):  # noqa: N802
        self._answer("PUT")

    def _answer(self, method: str):
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length)) if length else None
        code, body = self.server.fake.handle(method, path, {k.lower(): v for k, v in self.headers.items()}, request,
                                             query)
        text = isinstance(body, str)  # a pod's log
        data = body.encode() if text else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # quiet
        pass

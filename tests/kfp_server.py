"""A loopback fake of a KFP 2.x server for tests: the v2beta1 REST calls kfp.Client makes, and the two
ML Metadata gRPC-web calls that read a run's metrics back (backends/kfp/submitting/mlmd.py).

It is a real HTTP server on 127.0.0.1 (a random free port) in a background thread. Responses use the
JSON field names of the kfp_server_api models (V2beta1Run: run_id, display_name, experiment_id, state,
pipeline_spec, runtime_config.parameters, run_details.task_details ...), and errors the
google.rpc.Status shape of the server's gRPC gateway. The MLMD protobuf messages are encoded and
decoded by hand (tests/protobuf_wire.py), independently of the client, so a test checks the client's field numbers.

Every request is recorded (method, path, query, headers, body) for tests to assert on.
"""
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

from tests.loopback import LoopbackServer
from tests.protobuf_wire import bytes_field, decode, grpc_web, int_field, mlmd_artifact, unframe

API = "/apis/v2beta1"
MLMD = "/ml_metadata.MetadataStoreService/"
DEFAULT_METRICS = {"val_accuracy_top-1": 92.5, "val_accuracy_top-5": 99.75, "test_accuracy_top-1": 91.25,
                   "test_accuracy_top-5": 99.5, "test_precision": 90.75, "test_recall": 91.0, "test_f1_score": 90.5}
TASKS = ("prepare-data", "train", "test", "produce-metrics")
FINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")
_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13, 503: 14}  # 409: ALREADY_EXISTS


@dataclass
class Request:
    """One request as the server saw it: header names lower-cased; ``body`` is parsed JSON, raw bytes
    (gRPC-web) or None."""

    method: str
    path: str
    query: dict
    headers: dict
    body: Any


@dataclass
class FakeKfpServer(LoopbackServer):
    """Configure, then ``with FakeKfpServer(...) as server:`` and point a client at ``server.url``.

    token:             when set, every request needs ``Authorization: Bearer <token>`` (else 401)
    final_state:       the state runs end in (SUCCEEDED, FAILED, CANCELED, SKIPPED)
    gets_until_final:  runs read RUNNING until their N-th GET
    failing_gets:      the first N GETs of each run answer 503, as a struggling server would
    namespaces:        when set, a namespace outside it is refused with 400 and a message
    metrics:           the scalars the run's `metrics` artifact carries in ML Metadata
    serve_mlmd:        False: answer MLMD paths like a bare API server (404, not gRPC-web)
    login_redirect:    answer everything with a 302 to a login page, as an auth proxy does
    tag_name:          the KFP release healthz names, as the API server's own handler answers it
                       (``{"commit_sha": ..., "tag_name": ..., "multi_user": ...}``, backend/src/apiserver/main.go)
    stale_lookups:     the first N experiment lookups find nothing, as when another client creates the
                       experiment between this one's lookup and its create (which then answers 409)
    together:          runs stay RUNNING until this many runs have been created; a run that reads
                       RUNNING ``alone_limit`` times before that ends FAILED, saying it ran alone
    """

    token: Optional[str] = None
    final_state: str = "SUCCEEDED"
    gets_until_final: int = 2
    failing_gets: int = 0
    namespaces: Optional[set] = None
    metrics: dict = field(default_factory=lambda: dict(DEFAULT_METRICS))
    serve_mlmd: bool = True
    login_redirect: bool = False
    tag_name: str = "2.17.0"
    stale_lookups: int = 0
    together: int = 1
    alone_limit: int = 1000
    most_in_flight: int = 0  # the most runs that were not yet in a final state at once
    requests: list = field(default_factory=list)
    experiments: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._serve(_Handler)

    def requests_to(self, method: str, path: str) -> list:
        """The recorded requests with this method whose path starts with ``path``."""
        return [r for r in self.requests if r.method == method and r.path.startswith(path)]

    # --- request handling (called from the server's threads) -----------------------------------

    def handle(self, request: Request) -> tuple[int, dict, bytes]:
        with self._lock:
            self.requests.append(request)
            if self.login_redirect:
                return 302, {"Location": "/dex/auth?client_id=kubeflow-oidc-authservice"}, b""
            if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
                return _status(401, "Unauthenticated: a valid bearer token is required")
            if request.path.startswith(MLMD):
                return self._mlmd(request)
            return self._rest(request)

    def _rest(self, request: Request) -> tuple[int, dict, bytes]:
        method, path = request.method, request.path
        if (method, path) == ("GET", f"{API}/healthz"):
            return _json(200, {"commit_sha": "0123abc", "tag_name": self.tag_name,
                               "multi_user": self.namespaces is not None})
        if (method, path) == ("GET", f"{API}/experiments"):
            return self._list_experiments(request.query)
        if (method, path) == ("POST", f"{API}/experiments"):
            return self._create_experiment(request.body)
        if (method, path) == ("POST", f"{API}/runs"):
            return self._create_run(request.body)
        if method == "GET" and path.startswith(f"{API}/runs/"):
            return self._get_run(path.rsplit("/", 1)[1])
        return _status(404, f"Not Found: {method} {path}")

    def _namespace_error(self, namespace: str):
        if self.namespaces is not None and namespace and namespace not in self.namespaces:
            return _status(400, f"Invalid input error: namespace '{namespace}' does not exist")
        return None

    def _list_experiments(self, query: dict):
        namespace = query.get("namespace", [""])[0]
        error = self._namespace_error(namespace)
        if error:
            return error
        # kfp.Client filters by name: {"predicates": [{"operation": 1 (EQUALS), "key": "display_name", ...}]}
        predicates = json.loads(query.get("filter", ['{"predicates": []}'])[0])["predicates"]
        if self.stale_lookups > 0:
            self.stale_lookups -= 1
            return _json(200, {})
        found = [e for e in self.experiments.values()
                 if all(e[p["key"]] == p.get("stringValue", p.get("string_value")) for p in predicates)
                 and (not namespace or e["namespace"] == namespace)]
        return _json(200, {"experiments": found, "total_size": len(found)} if found else {})

    def _create_experiment(self, body: dict):
        error = self._namespace_error(body.get("namespace", ""))
        if error:
            return error
        namespace = body.get("namespace", "")
        if any(e["display_name"] == body["display_name"] and e["namespace"] == namespace
               for e in self.experiments.values()):  # the API server's unique (name, namespace) index
            return _status(409, f"Failed to create a new experiment. The name {body['display_name']} already "
                                "exists. Please specify a new name")
        experiment = {"experiment_id": str(uuid.uuid4()), "display_name": body["display_name"],
                      "description": body.get("description", ""), "namespace": namespace,
                      "created_at": _now(), "storage_state": "AVAILABLE"}
        self.experiments[experiment["experiment_id"]] = experiment
        return _json(200, experiment)

    def _create_run(self, body: dict):
        if body.get("experiment_id") not in self.experiments:
            return _status(404, f"Experiment {body.get('experiment_id')} not found")
        run_id = str(uuid.uuid4())
        self.runs[run_id] = {
            "run_id": run_id, "experiment_id": body["experiment_id"], "display_name": body["display_name"],
            "pipeline_spec": body.get("pipeline_spec"), "runtime_config": body.get("runtime_config", {}),
            "storage_state": "AVAILABLE", "created_at": _now(), "state": "PENDING",
            "state_history": [{"update_time": _now(), "state": "PENDING"}],
            "_gets": 0, "_alone": 0, "_context_id": 100 + len(self.runs),
        }
        in_flight = sum(run["state"] not in FINAL_STATES for run in self.runs.values())
        self.most_in_flight = max(self.most_in_flight, in_flight)
        return _json(200, _public(self.runs[run_id]))

    def _get_run(self, run_id: str):
        run = self.runs.get(run_id)
        if run is None:
            return _status(404, f"Run {run_id} not found")
        if len(self.runs) < self.together:  # waits for company: the poll does not count
            run["_alone"] += 1
            state = "FAILED" if run["_alone"] >= self.alone_limit else "RUNNING"
            return self._answer_run(run, state)
        run["_gets"] += 1
        if run["_gets"] <= self.failing_gets:
            return _status(503, "upstream connect error")
        state = self.final_state if run["_gets"] >= self.failing_gets + self.gets_until_final else "RUNNING"
        return self._answer_run(run, state)

    def _answer_run(self, run: dict, state: str):
        run_id = run["run_id"]
        if state != run["state"]:
            run["state"] = state
            run["state_history"].append({"update_time": _now(), "state": state})
        run["run_details"] = {"pipeline_run_context_id": str(run["_context_id"]),
                              "task_details": _task_details(run_id, state)}
        if state == "FAILED":
            alone = " (it ran alone: the fake's runs wait for company)" if run["_alone"] else ""
            run["error"] = {"code": 2, "message": f"task produce-metrics failed: exit status 1{alone}"}
        return _json(200, _public(run))

    # --- ML Metadata over gRPC-web ---------------------------------------------------------------

    def _mlmd(self, request: Request) -> tuple[int, dict, bytes]:
        if not self.serve_mlmd:
            return 404, {"Content-Type": "text/plain"}, b"404 page not found"
        method = request.path[len(MLMD):]
        fields = decode(unframe(request.body))
        if method == "GetContextByTypeAndName":
            run = self.runs.get(fields.get(2, b"").decode())
            found = fields.get(1) == b"system.PipelineRun" and run is not None
            # GetContextByTypeAndNameResponse{context(1): Context{id(1), name(3)}}; empty when not found
            context = int_field(1, run["_context_id"]) + bytes_field(3, run["run_id"].encode()) if found else b""
            return grpc_web(bytes_field(1, context) if found else b"")
        if method == "GetArtifactsByContext":
            context_id = fields.get(1)
            artifacts = self._artifacts(context_id)
            # GetArtifactsByContextResponse{repeated artifacts(1)}
            return grpc_web(b"".join(bytes_field(1, artifact) for artifact in artifacts))
        return grpc_web(b"", status=12, detail=f"{method} is not served by this fake")

    def _artifacts(self, context_id: int) -> list[bytes]:
        """The run's output artifacts as KFP records them: display_name = the output's name."""
        if not any(run["_context_id"] == context_id for run in self.runs.values()):
            return []
        session = {"store_session_info": '{"Provider":"minio"}'}
        return [
            mlmd_artifact(context_id * 10 + 1, "system.Model", {"display_name": "model", **session}),
            mlmd_artifact(context_id * 10 + 2, "system.Metrics",
                          {"display_name": "metrics", **session, **self.metrics}),
            mlmd_artifact(context_id * 10 + 3, "system.ClassificationMetrics",
                          {"display_name": "classification", "accuracy_top-1": -1.0, **session}),
        ]


def _public(run: dict) -> dict:
    return {key: value for key, value in run.items() if not key.startswith("_")}


def _task_details(run_id: str, state: str) -> list:
    """Tasks as the v2beta1 API reports them: no output values; the last one fails in a FAILED run."""
    states = {"RUNNING": ("SUCCEEDED", "SUCCEEDED", "RUNNING", "PENDING"),
              "FAILED": ("SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "FAILED")}.get(state, (state,) * len(TASKS))
    return [{"run_id": run_id, "task_id": str(uuid.uuid5(uuid.NAMESPACE_URL, run_id + name)),
             "display_name": name, "state": task_state, "create_time": _now()}
            for name, task_state in zip(TASKS, states, strict=True)]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(status: int, payload: dict) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _status(http_status: int, message: str) -> tuple[int, dict, bytes]:
    """An error as the KFP gRPC gateway writes it: a google.rpc.Status (plus the legacy "error")."""
    return _json(http_status, {"error": message, "code": _GRPC_CODES.get(http_status, 2), "message": message,
                               "details": []})


class _Handler(BaseHTTPRequestHandler):
    """Parses a request into a Request and writes FakeKfpServer.handle's answer."""

    def do_GET(self):
        self._answer()

    def do_POST(self):
        self._answer()

    def _answer(self):
        url = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        is_json = self.headers.get("Content-Type", "").startswith("application/json")
        body = json.loads(raw) if raw and is_json else (raw or None)
        request = Request(self.command, url.path, parse_qs(url.query, keep_blank_values=True),
                          {name.lower(): value for name, value in self.headers.items()}, body)
        status, headers, payload = self.server.fake.handle(request)
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(payload))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):
        """Quiet: tests read stderr."""

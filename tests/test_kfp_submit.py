"""backends.kfp.submitting.client.submit against a loopback fake KFP server (tests/kfp_server.py).

The pipeline is a tiny real one compiled by kfp's compiler here, with a kfp-kubernetes PVC mount so
the package carries a platform spec; it does not depend on backends/kfp/backend.py.
"""
import json
import logging
import socket
import threading

import kfp
import pytest
import yaml
from kfp import compiler, dsl, kubernetes
from omegaconf import OmegaConf

from backends.kfp.schema import KfpBackendConfig
from backends.kfp.submitting.client import submit
from backends.kfp.submitting.endpoint import KfpError
from backends.kfp.submitting.mlmd import MetricsNotReadBack
from mmclf.errors import ConfigError, ResultNotHere
from mmclf.reports.jobs import JobContext
from mmclf.task import run_job
from tests.conftest import closed_port_url, compose_cfg
from tests.kfp_server import DEFAULT_METRICS, FakeKfpServer

TOKEN = "s3cr3t-t0ken-value-never-shown"
ARGUMENTS = {"config_yaml": "seed: 3\nmodel: {type: ImageClassifier}\n", "seed": 3}
RUN_DIR = "/mnt/mmclf/runs/job-1"  # the run writes in <this>-<run id> on the volume


@dsl.component(base_image="python:3.11")
def echo(message: str) -> str:
    return message


@dsl.pipeline(name="tiny-mmclf")
def tiny_pipeline(config_yaml: str = "seed: 0", seed: int = 0):
    task = echo(message=config_yaml)
    kubernetes.mount_pvc(task, pvc_name="mmclf-data", mount_path="/mnt/mmclf")


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("run_dir") / "pipeline.yaml"
    compiler.Compiler().compile(tiny_pipeline, str(path))
    return path


@pytest.fixture(autouse=True)
def isolated_sdk(monkeypatch, tmp_path):
    """Keep kfp.Client away from the user's ~/.config/kfp/context.json and KF_PIPELINES_* variables,
    and this process away from any cluster (no kubeconfig: no preflight)."""
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp_context.json"))
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME",
                 "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME", "MMCLF_KFP_TOKEN", "KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    with FakeKfpServer() as fake:
        yield fake


def backend(**overrides):
    """The kfp backend node as Hydra composes it from the typed schema; polls fast for tests."""
    return OmegaConf.structured(KfpBackendConfig(mode="submit", poll_interval_s=0.01, **overrides))


class HangUpServer:
    """A loopback TCP port that accepts each connection and closes it at once, counting them."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.connections += 1
            conn.close()


def test_run_carries_the_compiled_spec_and_the_arguments(server, pipeline_file, caplog):
    caplog.set_level(logging.INFO)
    assert submit(pipeline_file, backend(host=server.url), "job 1", ARGUMENTS, RUN_DIR) is None

    [create] = server.requests_to("POST", "/apis/v2beta1/runs")
    pipeline_doc, platform_doc = yaml.safe_load_all(pipeline_file.read_text())
    # The SDK sends pipeline and platform spec together when a platform spec exists.
    assert create.body["pipeline_spec"] == {"pipeline_spec": pipeline_doc, "platform_spec": platform_doc}
    mount = create.body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]
    assert mount["executors"]["exec-echo"]["pvcMount"][0]["mountPath"] == "/mnt/mmclf"
    assert create.body["runtime_config"]["parameters"] == ARGUMENTS
    assert create.body["display_name"] == "job 1"
    [experiment] = server.experiments.values()
    assert experiment["display_name"] == "mmclf"
    assert create.body["experiment_id"] == experiment["experiment_id"]

    [run_id] = server.runs
    assert f"{server.url}/#/runs/details/{run_id}" in caplog.text
    assert not server.requests_to("GET", "/apis/v2beta1/runs/")  # wait=false: no polling
    record = json.loads((pipeline_file.parent / "kfp_run.json").read_text())
    assert record["run_id"] == run_id and record["run_dir"] == f"{RUN_DIR}-{run_id}", "the folder the run writes"
    assert f"it writes to {RUN_DIR}-{run_id} on the claim create-volume made" in caplog.text


def test_submit_warns_that_kfp_before_2_16_ignores_the_pods_security_context(pipeline_file, caplog):
    with FakeKfpServer(tag_name="2.15.0") as old:
        submit(pipeline_file, backend(host=old.url), "job", ARGUMENTS, RUN_DIR)
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert warning.getMessage().startswith("KFP 2.15.0 ignores the pods' security context (KFP honours it from 2.16)")
    caplog.clear()
    with FakeKfpServer(tag_name="2.16.0") as current:
        submit(pipeline_file, backend(host=current.url), "job", ARGUMENTS, RUN_DIR)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_host_comes_from_kf_pipelines_endpoint(server, pipeline_file, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", server.url + "/")
    submit(pipeline_file, backend(experiment="sweep-7"), "job", ARGUMENTS, RUN_DIR)
    assert [e["display_name"] for e in server.experiments.values()] == ["sweep-7"]


def test_second_submit_reuses_the_experiment(server, pipeline_file):
    submit(pipeline_file, backend(host=server.url, experiment="sweep"), "job 1", ARGUMENTS, RUN_DIR)
    submit(pipeline_file, backend(host=server.url, experiment="sweep"), "job 2", ARGUMENTS, RUN_DIR)

    assert len(server.requests_to("POST", "/apis/v2beta1/experiments")) == 1
    lookups = server.requests_to("GET", "/apis/v2beta1/experiments")
    assert len(lookups) == 2 and all('"display_name"' in r.query["filter"][0] for r in lookups)
    [experiment_id] = server.experiments
    assert [r.body["experiment_id"] for r in server.requests_to("POST", "/apis/v2beta1/runs")] == [experiment_id] * 2


def test_wait_returns_the_metrics_of_a_succeeded_run(server, pipeline_file, caplog):
    caplog.set_level(logging.INFO)
    metrics = submit(pipeline_file, backend(host=server.url, wait=True), "job", ARGUMENTS, RUN_DIR)

    assert metrics == DEFAULT_METRICS  # only the `metrics` output's scalars, not other artifacts'
    assert all(isinstance(value, float) for value in metrics.values())
    [run_id] = server.runs
    assert len(server.requests_to("GET", f"/apis/v2beta1/runs/{run_id}")) == server.gets_until_final
    assert f"KFP run {run_id}: RUNNING" in caplog.text and f"KFP run {run_id}: SUCCEEDED" in caplog.text
    [context_lookup] = server.requests_to("POST", "/ml_metadata.MetadataStoreService/GetContextByTypeAndName")
    assert context_lookup.headers["content-type"] == "application/grpc-web+proto"
    assert run_id.encode() in context_lookup.body and b"system.PipelineRun" in context_lookup.body


def test_wait_survives_a_few_unanswered_polls(pipeline_file, caplog):
    with FakeKfpServer(failing_gets=2) as server:
        metrics = submit(pipeline_file, backend(host=server.url, wait=True), "job", ARGUMENTS, RUN_DIR)
    assert metrics == DEFAULT_METRICS
    assert "no answer from" in caplog.text


@pytest.mark.parametrize("state", ["FAILED", "CANCELED"])
def test_wait_raises_when_the_run_does_not_succeed(pipeline_file, state):
    with FakeKfpServer(final_state=state) as server, pytest.raises(KfpError) as err:
        submit(pipeline_file, backend(host=server.url, wait=True), "job", ARGUMENTS, RUN_DIR)
    [run_id] = server.runs
    assert f"KFP run {run_id} ended {state}" in str(err.value)
    assert f"{server.url}/#/runs/details/{run_id}" in str(err.value)
    if state == "FAILED":
        assert "failed tasks: produce-metrics" in str(err.value)
    assert not server.requests_to("POST", "/ml_metadata")


def test_metrics_unreadable_on_a_bare_api_server_is_a_clear_error(pipeline_file):
    with FakeKfpServer(serve_mlmd=False) as server, pytest.raises(MetricsNotReadBack) as err:
        submit(pipeline_file, backend(host=server.url, wait=True), "job", ARGUMENTS, RUN_DIR)
    [run_id] = server.runs
    message = str(err.value)
    assert f"KFP run {run_id} SUCCEEDED" in message and "not ML Metadata's gRPC-web proxy" in message
    assert "svc/ml-pipeline-ui" in message
    assert f"{RUN_DIR}-{run_id}/metrics.json on the claim create-volume made for the run" in message
    assert isinstance(err.value, KfpError) and isinstance(err.value, ResultNotHere)


def test_a_run_that_succeeded_without_metrics_is_recorded_as_such(tmp_path, data_root):
    with FakeKfpServer(serve_mlmd=False) as server:
        cfg = compose_cfg(["backend=kfp", "backend.mode=submit", "backend.wait=true", f"backend.host={server.url}",
                           "backend.poll_interval_s=0.01", "backend.volume.mode=existing",
                           "backend.volume.claim_name=mmclf-data", "data=synthetic", f"data.root={data_root}"])
        with pytest.raises(SystemExit):  # one line, exit status 2: the core's way with a user error
            run_job(cfg, tmp_path / "run", JobContext())
        [run_id] = server.runs
        record = json.loads((tmp_path / "run/job.json").read_text())
        assert record["status"] == "succeeded_without_metrics", "the run succeeded; only its metrics did not come back"
        assert record["remote"]["state"] == "SUCCEEDED" and record["remote"]["run_id"] == run_id
        assert f"{record['remote']['run_dir']}/metrics.json on claim mmclf-data" in record["error"]

        server.serve_mlmd = True  # the same command again, once ML Metadata answers
        assert run_job(cfg, tmp_path / "run", JobContext()) == pytest.approx(server.metrics["val_accuracy_top-1"])
        assert list(server.runs) == [run_id], "the run that succeeded is not submitted again"
        assert json.loads((tmp_path / "run/job.json").read_text())["status"] == "succeeded"


def test_an_experiment_created_meanwhile_by_another_job_is_used(pipeline_file):
    with FakeKfpServer() as server:
        submit(pipeline_file, backend(host=server.url, experiment="sweep"), "job 1", ARGUMENTS, RUN_DIR)
        server.stale_lookups = 1  # job 2 looks before job 1's experiment shows: its create answers 409
        submit(pipeline_file, backend(host=server.url, experiment="sweep"), "job 2", ARGUMENTS, RUN_DIR)
    [experiment_id] = server.experiments
    assert len(server.requests_to("POST", "/apis/v2beta1/experiments")) == 2, "the second create was refused"
    assert [r.body["experiment_id"] for r in server.requests_to("POST", "/apis/v2beta1/runs")] == [experiment_id] * 2


def test_server_down_fails_fast_and_keeps_the_pipeline_file(pipeline_file):
    url = closed_port_url()
    with pytest.raises(KfpError) as err:
        submit(pipeline_file, backend(host=url, wait=True), "job", ARGUMENTS, RUN_DIR)
    assert f"cannot reach the KFP API at {url}" in str(err.value)
    assert str(pipeline_file) in str(err.value) and "by hand" in str(err.value)


def test_a_server_that_hangs_up_is_asked_once_not_retried(pipeline_file):
    hang_up = HangUpServer()
    with pytest.raises(KfpError, match=f"cannot reach the KFP API at {hang_up.url}"):
        submit(pipeline_file, backend(host=hang_up.url), "job", ARGUMENTS, RUN_DIR)
    hang_up.sock.close()
    assert hang_up.connections == 1, "kfp.Client's own health check would retry five times, 5 s apart"


def test_no_host_is_a_config_error(pipeline_file):
    with pytest.raises(ConfigError, match=r"backend\.host.*KF_PIPELINES_ENDPOINT"):
        submit(pipeline_file, backend(), "job", ARGUMENTS, RUN_DIR)


def test_token_env_naming_an_unset_variable_is_a_config_error(server, pipeline_file):
    with pytest.raises(ConfigError, match=r"\$MMCLF_KFP_TOKEN is unset or empty"):
        submit(pipeline_file, backend(host=server.url, token_env="MMCLF_KFP_TOKEN"), "job", ARGUMENTS, RUN_DIR)
    assert not server.requests


def test_401_without_a_token_says_to_set_token_env(pipeline_file):
    with FakeKfpServer(token=TOKEN) as server, pytest.raises(KfpError) as err:
        submit(pipeline_file, backend(host=server.url), "job", ARGUMENTS, RUN_DIR)
    assert "refused auth (HTTP 401)" in str(err.value) and "backend.token_env" in str(err.value)
    assert not server.runs


def test_401_with_a_wrong_token_names_token_env_not_the_token(pipeline_file, monkeypatch):
    monkeypatch.setenv("MMCLF_KFP_TOKEN", "wrong-token-value")
    with FakeKfpServer(token=TOKEN) as server, pytest.raises(KfpError) as err:
        submit(pipeline_file, backend(host=server.url, token_env="MMCLF_KFP_TOKEN"), "job", ARGUMENTS, RUN_DIR)
    assert "refused auth (HTTP 401)" in str(err.value) and "$MMCLF_KFP_TOKEN" in str(err.value)
    assert "wrong-token-value" not in str(err.value)


def test_token_reaches_the_server_and_nothing_else(pipeline_file, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)  # includes kfp_server_api's and urllib3's debug logs
    monkeypatch.setenv("MMCLF_KFP_TOKEN", TOKEN)
    with FakeKfpServer(token=TOKEN) as server:
        metrics = submit(pipeline_file, backend(host=server.url, token_env="MMCLF_KFP_TOKEN", wait=True),
                         "job", ARGUMENTS, RUN_DIR)
    assert metrics == DEFAULT_METRICS
    assert {r.headers.get("authorization") for r in server.requests} == {f"Bearer {TOKEN}"}
    assert server.requests_to("POST", "/ml_metadata")  # the MLMD calls carry it too
    out, err = capsys.readouterr()
    assert TOKEN not in out + err + caplog.text


def test_unknown_namespace_reports_the_servers_message(pipeline_file):
    with FakeKfpServer(namespaces={"team-a"}) as server, pytest.raises(KfpError) as err:
        submit(pipeline_file, backend(host=server.url, namespace="team-b"), "job", ARGUMENTS, RUN_DIR)
    assert "answered HTTP 400" in str(err.value) and "namespace 'team-b' does not exist" in str(err.value)
    assert not server.runs


def test_namespace_is_sent_with_the_experiment(pipeline_file):
    with FakeKfpServer(namespaces={"team-a"}) as server:
        submit(pipeline_file, backend(host=server.url, namespace="team-a"), "job", ARGUMENTS, RUN_DIR)
    [lookup] = server.requests_to("GET", "/apis/v2beta1/experiments")
    assert lookup.query["namespace"] == ["team-a"]
    assert [e["namespace"] for e in server.experiments.values()] == ["team-a"]


def test_a_host_that_is_not_kfp_is_named(server, pipeline_file):
    with pytest.raises(KfpError, match=r"/not-kfp does not look like a KFP endpoint .*HTTP 404"):
        submit(pipeline_file, backend(host=server.url + "/not-kfp"), "job", ARGUMENTS, RUN_DIR)


def test_a_login_redirect_is_an_auth_error(pipeline_file):
    with FakeKfpServer(login_redirect=True) as server, pytest.raises(KfpError) as err:
        submit(pipeline_file, backend(host=server.url), "job", ARGUMENTS, RUN_DIR)
    assert "redirected (HTTP 302)" in str(err.value) and "backend.token_env" in str(err.value)
    assert len(server.requests) == 1  # not followed to the login page

"""backend.serve against a cluster: the serve task and the preflight run for real against the loopback
Kubernetes API (tests/k8s_server.py, tests/k8s_kserve.py). No KServe controller, Knative or Triton runs
here: that Triton loads the repository is not checked."""
import json
import logging
import os

import numpy as np
import pytest
import yaml

from backends.kfp.compiling.compile import pod_config_yaml
from backends.kfp.serving.manifest import inference_service
from backends.kfp.serving.serve_task import serve_in_pod
from mmclf.deploy.predict import OnnxPredictor
from mmclf.run import io
from mmclf.run.rundir import RunDir
from mmclf.steps.export import SMOKE_IMAGES, smoke_test
from tests import test_kfp_cluster
from tests.conftest import compose_cfg
from tests.k8s_kserve import CLUSTER_URL, FakeKServe, kserve_problems
from tests.test_kfp_serve import RUN_ID, SERVE, tiny_onnx

kube = test_kfp_cluster.kube  # the fixture: a fake cluster behind $KUBECONFIG


def smoke_test_of(model_path) -> bytes:
    """The export step's smoke_test.npz for a model: seeded images of its input size, and its scores of them."""
    predictor = OnnxPredictor(model_path, [])
    size = predictor.image_size
    images = list(np.random.default_rng(0).integers(0, 256, (SMOKE_IMAGES, size, size, 3), dtype=np.uint8))
    return smoke_test(images, predictor.scores(images))


def serve_task(tmp_path, accuracy: float = 92.5, *overrides, smoke_file: bool = True):
    """What the serve task's pod does, in a run folder the earlier steps left on the volume (tmp_path). The fake
    says the service is Ready at once; the smoke inference is tested in test_kfp_serve_ready.py."""
    cfg = compose_cfg(["backend=kfp", "data=synthetic", *SERVE, f"backend.volume.mount_path={tmp_path}",
                       "backend.volume.mode=existing", "backend.volume.claim_name=claim-1",
                       "backend.serve.smoke_test=false", "backend.serve.poll_interval_s=0.01", *overrides])
    folder = RunDir(tmp_path / "runs" / f"job-{RUN_ID}")
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.metrics.write_text(json.dumps({"val_accuracy_top-1": accuracy}))
    folder.onnx_model.write_bytes(tiny_onnx())
    if smoke_file:
        folder.smoke_test.write_bytes(smoke_test_of(folder.onnx_model))
    serve_in_pod(pod_config_yaml(cfg, f"{tmp_path}/data"), str(tmp_path / "runs" / "job"), RUN_ID, "claim-1")
    return folder


def test_the_serve_task_lays_out_the_model_and_creates_the_inferenceservice_strictly(tmp_path, kube, caplog,
                                                                                     monkeypatch):
    caplog.set_level(logging.INFO)
    cluster = kube()
    monkeypatch.setattr(io, "_UMASK", 0o077)  # a pod whose umask keeps its files to itself
    umask = os.umask(0o077)
    try:
        folder = serve_task(tmp_path, 92.5, "backend.serve.min_metric=90", "backend.serve.name=pets")
    finally:
        os.umask(umask)
    ((method, query, body),) = cluster.kserve.writes
    assert method == "POST" and query["fieldValidation"] == ["Strict"]
    assert kserve_problems(body) == [] and body["metadata"] == {
        "name": "pets", "namespace": "kubeflow", "labels": {"app.kubernetes.io/name": "mmclf",
                                                            "app.kubernetes.io/component": "serve",
                                                            "pipeline/runid": RUN_ID}}
    assert body["spec"]["predictor"]["model"]["storageUri"] == f"pvc://claim-1/runs/job-{RUN_ID}/serving"
    repository = folder.serving / "mmclf"
    assert (repository / "1" / "model.onnx").read_bytes() == folder.onnx_model.read_bytes()
    modes = {path.relative_to(folder.serving).as_posix(): path.stat().st_mode & 0o777
             for path in [folder.serving, *folder.serving.rglob("*")]}
    assert modes == {".": 0o755, "mmclf": 0o755, "mmclf/1": 0o755, "mmclf/1/model.onnx": 0o644,
                     "mmclf/config.pbtxt": 0o644}, "readable by the predictor's user, whoever wrote it"
    assert "max_batch_size: 64" in (repository / "config.pbtxt").read_text()
    assert yaml.safe_load(folder.inference_service.read_text()) == body
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("serve: ")]
    assert lines[0] == "serve: val_accuracy_top-1=92.50 reaches backend.serve.min_metric=90.0: deploying"
    assert lines[1].startswith("serve: InferenceService pets created in namespace kubeflow")
    assert lines[2] == (f"serve: InferenceService pets is Ready at {CLUSTER_URL}: POST {CLUSTER_URL}/v2/models/mmclf/"
                        "infer")


def test_below_the_gate_nothing_is_deployed_and_the_task_succeeds(tmp_path, kube, caplog):
    caplog.set_level(logging.INFO)
    cluster = kube()
    folder = serve_task(tmp_path, 62.5, "backend.serve.min_metric=90")
    assert cluster.kserve.writes == [] and not folder.serving.exists()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("serve: ")]
    assert lines == ["serve: not deployed: val_accuracy_top-1=62.50 is below backend.serve.min_metric=90.0"]


def test_a_retried_task_replaces_the_inferenceservice_at_its_current_version(tmp_path, kube, caplog):
    caplog.set_level(logging.INFO)
    cluster = kube()
    serve_task(tmp_path, 92.5, "backend.serve.name=pets")
    serve_task(tmp_path, 93.0, "backend.serve.name=pets")
    assert [(method, body["metadata"].get("resourceVersion")) for method, _, body in cluster.kserve.writes] == [
        ("POST", None), ("POST", None), ("PUT", "1")]
    assert cluster.kserve.writes[2][1]["fieldValidation"] == ["Strict"]
    assert cluster.kserve.services["pets"]["metadata"]["resourceVersion"] == "2"
    assert "InferenceService pets replaced in namespace kubeflow" in caplog.text


@pytest.mark.parametrize("cluster, said", [
    ({"kserve": FakeKServe(installed=False)}, "HTTP 404 Not Found: the server could not find the requested resource; "
                                              "the cluster serves no InferenceService API (serving.kserve.io/v1beta1)"),
    ({"forbidden": {"inferenceservices"}}, 'HTTP 403 Forbidden: inferenceservices is forbidden: User "system:'
                                           'serviceaccount:kubeflow:tester" cannot create resource "inferenceservices" '
                                           'in API group "serving.kserve.io"'),
])
def test_a_cluster_that_cannot_take_the_inferenceservice_says_why_in_one_line(tmp_path, kube, capsys, cluster, said):
    kube(**cluster)
    with pytest.raises(SystemExit) as ended:
        serve_task(tmp_path)
    assert ended.value.code == 1, "a failure: the run trained, its serving did not start"
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmclf: error:")]
    assert "creating InferenceService job in namespace kubeflow: " in line and said in line


def test_a_field_kserve_does_not_know_is_refused_by_strict_validation(tmp_path, kube, capsys, monkeypatch):
    kube()
    import backends.kfp.serving.serve_task as task

    def with_typo(*args):
        manifest = inference_service(*args)
        manifest["spec"]["predictor"]["model"]["storageURI"] = "pvc://elsewhere"
        return manifest

    monkeypatch.setattr(task, "inference_service", with_typo)
    with pytest.raises(SystemExit):
        serve_task(tmp_path)
    assert ('HTTP 400 Bad Request: InferenceService in version "v1beta1" cannot be handled as a InferenceService: '
            'strict decoding error: unknown field "spec.predictor.model.storageURI"') in capsys.readouterr().err


# --- the preflight (backend.mode=check) ------------------------------------------------------------


def preflight(tmp_path, capsys, *overrides):
    return test_kfp_cluster.preflight(tmp_path, capsys, *SERVE, *overrides)


def test_check_asks_for_kserve_and_the_serve_tasks_rights(tmp_path, kube, capsys):
    cluster = kube(**test_kfp_cluster.healthy())
    lines, failed = preflight(tmp_path, capsys)
    assert failed is None
    assert "preflight: ok: KServe serves InferenceServices (serving.kserve.io/v1beta1)" in lines
    assert ("preflight: ok: service account pipeline-runner's rights on inferenceservices.serving.kserve.io in "
            "namespace kubeflow: create, get, update allowed") in lines
    reviews = [r["resourceAttributes"] for r in cluster.access_reviews]
    assert [(r["group"], r["resource"], r["verb"]) for r in reviews] == [
        ("serving.kserve.io", "inferenceservices", verb) for verb in ("create", "get", "update")]


@pytest.mark.parametrize("cluster, said", [
    ({"kserve": FakeKServe(installed=False)}, "PROBLEM: the cluster serves no InferenceService API"),
    ({"denied_verbs": {"update"}}, "PROBLEM: service account pipeline-runner's rights on inferenceservices."
                                   "serving.kserve.io in namespace kubeflow: may not update; give the pipeline's"),
    ({"forbidden": {"subjectaccessreviews"}}, "not checked: service account pipeline-runner's rights"),
])
def test_check_names_what_would_stop_the_serve_task(tmp_path, kube, capsys, cluster, said):
    kube(**test_kfp_cluster.healthy(**cluster))
    lines, _ = preflight(tmp_path, capsys)
    assert any(said in line for line in lines), lines

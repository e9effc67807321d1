"""The serve task ends only on a Ready, answering InferenceService: it waits for KServe's Ready condition,
fails in one line with the status's or the predictor pod's reason when the service cannot come up, and on
Ready sends a v2 smoke inference that must answer the run's model.onnx's scores. Against the loopback
Kubernetes API (statuses shaped as KServe's controller writes them, k8s_kserve.py) and a stand-in for
Triton at the wire (FakeTriton); no KServe controller or Triton runs here."""
import logging

import numpy as np
import pytest

from tests import test_kfp_cluster
from tests.conftest import closed_port_url
from tests.k8s_kserve import FakeKServe, FakeTriton, coming_up, failed_to_load, ready
from tests.test_kfp_serve import RUN_ID
from tests.test_kfp_serve_cluster import serve_task

kube = test_kfp_cluster.kube  # the fixture: a fake cluster behind $KUBECONFIG
SMOKE = ["backend.serve.smoke_test=true", "backend.serve.name=pets"]


@pytest.fixture
def triton(tmp_path):
    """The predictor the serve task's InferenceService would run, serving the repository it lays out."""
    with FakeTriton(tmp_path / "runs" / f"job-{RUN_ID}" / "serving" / "mmclf" / "1" / "model.onnx") as server:
        yield server


def one_line_failure(capsys, ended) -> str:
    assert ended.value.code == 1, "a failure: the run trained, its serving did not come up"
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmclf: error:")]
    return line


def test_the_task_waits_for_ready_then_answers_a_smoke_inference(tmp_path, kube, triton, caplog):
    caplog.set_level(logging.INFO)
    kube(kserve=FakeKServe(statuses=[coming_up(), coming_up(), ready(triton.url)]))
    serve_task(tmp_path, 92.5, *SMOKE)
    assert triton.requests == [(4, 16, 16, 3)], "one v2 inference of four images"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("serve: ")]
    assert f"serve: smoke inference of 4 test images at {triton.url}: the run's scores" in lines


def test_an_endpoint_serving_other_scores_fails_the_task(tmp_path, kube, triton, capsys):
    kube(kserve=FakeKServe(statuses=[ready(triton.url)]))
    triton.scores = np.full((4, 3), 1 / 3, dtype=np.float32)  # another model's answer
    with pytest.raises(SystemExit) as ended:
        serve_task(tmp_path, 92.5, *SMOKE)
    assert f"serve: {triton.url} answers other scores than the run's model.onnx" in one_line_failure(capsys, ended)


def test_a_run_without_its_smoke_test_images_names_the_export_step_and_the_switch(tmp_path, kube, triton, capsys):
    kube(kserve=FakeKServe(statuses=[ready(triton.url)]))
    with pytest.raises(SystemExit) as ended:
        serve_task(tmp_path, 92.5, *SMOKE, smoke_file=False)  # exported by an mmclf that did not keep one
    line = one_line_failure(capsys, ended)
    assert "smoke_test.npz: missing" in line and "backend.serve.smoke_test=false" in line
    assert triton.requests == []


def test_an_unreachable_endpoint_names_the_smoke_test_switch(tmp_path, kube, capsys):
    kube(kserve=FakeKServe(statuses=[ready(closed_port_url())]))
    with pytest.raises(SystemExit) as ended:
        serve_task(tmp_path, 92.5, *SMOKE)
    line = one_line_failure(capsys, ended)
    assert "is Ready but" in line and "did not answer a smoke inference" in line
    assert "backend.serve.smoke_test=false" in line


def test_a_model_that_cannot_load_fails_the_task_with_kserves_reason(tmp_path, kube, capsys):
    failed = failed_to_load("ModelLoadFailed", "failed to load model mmclf: Protobuf parsing failed",
                            "pets-predictor-00001-deployment-7c9d")
    kube(kserve=FakeKServe(statuses=[coming_up(), failed]))
    with pytest.raises(SystemExit) as ended:
        serve_task(tmp_path, 92.5, "backend.serve.name=pets")
    assert ("serve: InferenceService pets in namespace kubeflow cannot serve the model: ModelLoadFailed: failed to "
            "load model mmclf: Protobuf parsing failed (pod pets-predictor-00001-deployment-7c9d)"
            ) in one_line_failure(capsys, ended)


def predictor_pod(reason: str, message: str) -> dict:
    return {"metadata": {"name": "pets-predictor-00001-deployment-7c9d", "labels": {
        "serving.kserve.io/inferenceservice": "pets"}}, "spec": {"containers": [{"name": "kserve-container"}]},
        "status": {"phase": "Pending", "containerStatuses": [{
            "name": "kserve-container", "ready": False, "restartCount": 0, "image": "tritonserver", "imageID": "",
            "state": {"waiting": {"reason": reason, "message": message}}}]}}


def test_a_service_never_ready_fails_after_the_timeout_with_its_pods_reason(tmp_path, kube, capsys):
    pod = predictor_pod("CreateContainerConfigError", "container has runAsNonRoot and image will run as root")
    kube(pods=[pod], kserve=FakeKServe(statuses=[coming_up("RevisionMissing", "Configuration is waiting for a "
                                                                             "Revision to become ready.")]))
    with pytest.raises(SystemExit) as ended:
        serve_task(tmp_path, 92.5, "backend.serve.name=pets", "backend.serve.ready_timeout_s=0.2")
    line = one_line_failure(capsys, ended)
    assert "serve: InferenceService pets in namespace kubeflow is not Ready after 0.2 s: " in line
    assert "PredictorReady=False (RevisionMissing: Configuration is waiting for a Revision to become ready.)" in line
    assert ("pod pets-predictor-00001-deployment-7c9d: CreateContainerConfigError (container has runAsNonRoot and "
            "image will run as root)") in line and "backend.serve.ready_timeout_s" in line

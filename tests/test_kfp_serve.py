"""backend.serve: the serve task after produce-metrics and the KServe InferenceService it creates.

The compiled pipeline is read back from pipeline.yaml; the manifest is checked field by field against
KServe's own Python models (the ``kserve`` package, 0.21) and the Kubernetes models they nest; the serve
task and the preflight against the loopback Kubernetes API: test_kfp_serve_cluster.py.
"""
import json
import re

import pytest
import yaml
from omegaconf import OmegaConf

from backends.kfp.backend import KfpBackend
from backends.kfp.compiling.compile import pod_config_yaml
from backends.kfp.serving.manifest import MAX_NAME, inference_service, service_name, triton_config
from backends.kfp.serving.serve_task import passes_gate
from mmclf.deploy import serve as local_serve
from mmclf.errors import ConfigError
from mmclf.reports.jobs import JobContext
from mmclf.run.rundir import RunDir
from tests import test_kfp_cluster
from tests.conftest import compose_cfg
from tests.k8s_kserve import kserve_problems
from tests.test_kfp_pipeline import executor, inputs_of, k8s_of, tasks_of

SERVE = ["backend.serve.enabled=true"]
RUN_ID = "3f2b9a4e-51c7-4d0e-9a61-0c8e7d2f4b15"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
kube = test_kfp_cluster.kube  # the fixture: a fake cluster behind $KUBECONFIG


def compile_run(run_dir, *overrides):
    cfg = compose_cfg(["backend=kfp", "data=synthetic", *SERVE, *overrides])
    KfpBackend().run(cfg, RunDir(run_dir), JobContext())
    docs = list(yaml.safe_load_all((run_dir / "pipeline.yaml").read_text()))
    return docs[0], docs[1]["platforms"]["kubernetes"]


def tiny_onnx(size: int = 16, classes: int = 3) -> bytes:
    """A graph with the exported model's contract: uint8 images (batch, S, S, 3) in, softmax scores out."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["images"], ["pixels"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["pixels"], ["colour"], axes=[1, 2], keepdims=0),
             helper.make_node("MatMul", ["colour", "weights"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["scores"], axis=1)]
    weights = helper.make_tensor("weights", TensorProto.FLOAT, [3, classes], [0.01 * i for i in range(3 * classes)])
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.UINT8,
                                                                           ["batch", size, size, 3])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", classes])],
                              [weights])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


# --- compiling ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_cluster_access")
@pytest.mark.parametrize("style, command", [("python", None), ("container", ["python", "-m",
                                                                           "backends.kfp.serving.serve_task"])])
def test_serve_is_a_task_after_produce_metrics_and_compile_writes_the_manifest(tmp_path, capsys, style, command):
    spec, kubernetes = compile_run(tmp_path, f"backend.component={style}")
    assert sorted(tasks_of(spec)["serve"]["dependentTasks"]) == ["createpvc", "produce-metrics"]
    inputs = inputs_of(spec, "serve")
    assert inputs["claim_name"] == {"taskOutputParameter": {"producerTask": "createpvc", "outputParameterKey": "name"}}
    assert inputs["config_yaml"] == {"componentInputParameter": "config_yaml"}
    _, container = executor(spec, "serve")
    assert "resources" not in container, "it creates a resource; it computes nothing"
    if command:
        assert container["command"] == command
    else:
        assert "serve_in_pod(config_yaml, run_dir, run_id, claim_name)" in container["command"][-1]
        assert container["args"][-2:] == ["--function_to_execute", "serve"]
    settings = k8s_of(spec, kubernetes, "serve")
    assert settings["pvcMount"][0]["mountPath"] == "/mnt/mmclf"
    assert settings["securityContext"] == {"runAsUser": "1000", "runAsGroup": "1000", "runAsNonRoot": True}
    assert tasks_of(spec)["serve"]["cachingOptions"] == {}, "caching off"
    text = (tmp_path / "inferenceservice.yaml").read_text()
    assert text.startswith("# The InferenceService the serve task creates") and "always" in text.splitlines()[0]
    manifest = yaml.safe_load(text)
    assert kserve_problems(manifest) == []
    name = manifest["metadata"]["name"]
    assert DNS_1035.match(name) and name.startswith("mmclf-resnet18-synthetic-")
    assert manifest["spec"]["predictor"]["model"]["storageUri"] == f"pvc://<claim>/runs/{name}-<run-id>/serving"
    assert f"inferenceservice written: {tmp_path / 'inferenceservice.yaml'}" in capsys.readouterr().out


@pytest.mark.usefixtures("no_cluster_access")
def test_without_serve_there_is_no_serve_task_and_no_manifest(tmp_path):
    cfg = compose_cfg(["backend=kfp", "data=synthetic"])
    KfpBackend().run(cfg, RunDir(tmp_path), JobContext())
    assert "serve" not in tasks_of(next(yaml.safe_load_all((tmp_path / "pipeline.yaml").read_text())))
    assert not (tmp_path / "inferenceservice.yaml").exists()


@pytest.mark.usefixtures("no_cluster_access")
def test_an_existing_claim_and_a_namespace_are_named_in_the_manifest(tmp_path):
    compile_run(tmp_path, "backend.volume.mode=existing", "backend.volume.claim_name=shared",
                "backend.namespace=team-a", "backend.serve.name=pets", "backend.serve.min_metric=90")
    text = (tmp_path / "inferenceservice.yaml").read_text()
    assert "when val_accuracy_top-1 >= 90.0" in text.splitlines()[0]
    manifest = yaml.safe_load(text)
    assert manifest["metadata"]["name"] == "pets" and manifest["metadata"]["namespace"] == "team-a"
    assert manifest["spec"]["predictor"]["model"]["storageUri"].startswith("pvc://shared/runs/mmclf-resnet18-")


@pytest.mark.usefixtures("no_cluster_access")
@pytest.mark.parametrize("overrides, message", [
    (["backend.serve.name=Pets"], r"^backend\.serve\.name='Pets': .*DNS-1035 label of at most 45"),
    ([f"backend.serve.name=p{'x' * MAX_NAME}"], r"^backend\.serve\.name='px+': "),
    (["backend.serve.name=1pets"], r"^backend\.serve\.name='1pets': "),
    (["backend.mode=local"], r"^backend\.serve\.enabled=true with backend\.mode=local: "),
    (["backend.volume.mode=workspace"], r"backend\.volume\.mode=workspace: .*mode=create or existing"),
    (["backend.volume.delete_after=true"], r"backend\.volume\.delete_after=true: .*delete_after=false"),
    (["runtime.export.onnx=false"], r"runtime\.export\.onnx=false: .*runtime\.export\.onnx=true"),
    (["backend.namespace=a", "backend.serve.namespace=b"], r"^backend\.serve\.namespace=b with backend\.namespace=a"),
    (["backend.serve.min_replicas=3", "backend.serve.max_replicas=2"], r"min_replicas <= max_replicas"),
    (["backend.serve.resources.requests.memory=4Gi"], r"requests\.memory=4Gi is above .*limits\.memory=2Gi"),
    (["backend.serve.resources.requests.cpu=lots"], r"requests\.cpu='lots': not a positive Kubernetes quantity"),
    (["backend.serve.min_metric=0.9"], None),  # a fraction of a percentage: allowed
    (["backend.serve.min_metric=120"], r"^backend\.serve\.min_metric=120\.0: val_accuracy_top-1 is a percentage"),
    (["backend.serve.runtime=Triton_Server"], r"^backend\.serve\.runtime='Triton_Server': not a Kubernetes"),
    (["backend.serve.run_as_user=0"], r"^backend\.serve\.run_as_user=0: these pods run as non-root"),
    (["logger=mlflow", "logger.mlflow.tracking_uri=http://mlflow:5000", "logger.mlflow.registered_model=pets",
      "min_metric=80", "backend.serve.min_metric=90"], r"^backend\.serve\.min_metric=90\.0 with min_metric=80\.0 "),
    (["logger=mlflow", "logger.mlflow.tracking_uri=http://mlflow:5000", "logger.mlflow.registered_model=pets",
      "min_metric=80"], None),  # backend.serve.min_metric follows the release gate
    (["backend.serve.run_as_group=-1"], r"^backend\.serve\.run_as_group=-1: a gid is 0 or more"),
    (["backend.serve.ready_timeout_s=0"], r"^backend\.serve\.ready_timeout_s=0\.0, poll_interval_s=5\.0: both"),
])
def test_bad_serve_values_are_refused_in_one_line_before_anything_is_written(tmp_path, overrides, message):
    if message is None:
        compile_run(tmp_path, *overrides)
        return
    with pytest.raises(ConfigError, match=message) as refused:
        compile_run(tmp_path, *overrides)
    assert "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []


# --- the manifest against KServe's models ---------------------------------------------------------


def full_cfg(*overrides):
    cfg = compose_cfg(["backend=kfp", "data=synthetic", *SERVE, "backend.serve.runtime=kserve-tritonserver",
                       "backend.serve.resources.accelerator_count=1", "backend.serve.min_replicas=0",
                       "backend.serve.max_replicas=3", *overrides])
    return OmegaConf.create(pod_config_yaml(cfg, "/mnt/mmclf/data"))


def test_the_manifest_is_a_kserve_inferenceservice_field_for_field():
    manifest = inference_service(full_cfg(), "/mnt/mmclf/runs/r", RUN_ID, "claim-1", "team-a")
    assert kserve_problems(manifest) == []
    wrong = json.loads(json.dumps(manifest))
    wrong["spec"]["predictor"]["model"]["modelFormat"]["flavour"] = "onnx"  # no such field
    wrong["spec"]["predictor"]["minReplicas"] = "0"  # an integer in KServe's API
    assert sorted(kserve_problems(wrong)) == ["spec.predictor.minReplicas: '0' is not int",
                                              'unknown field "spec.predictor.model.modelFormat.flavour"']
    predictor = manifest["spec"]["predictor"]
    model = predictor["model"]
    assert (model["modelFormat"], model["protocolVersion"], model["runtime"]) == ({"name": "onnx"}, "v2",
                                                                                  "kserve-tritonserver")
    assert model["storageUri"] == f"pvc://claim-1/runs/r-{RUN_ID}/serving"
    assert model["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"},
                                  "limits": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"}}
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (0, 3)
    assert manifest["metadata"]["labels"]["pipeline/runid"] == RUN_ID and manifest["metadata"]["namespace"] == "team-a"


def test_the_predictor_keeps_pod_security_restricted_and_opts_out_of_the_sidecar():
    predictor = inference_service(full_cfg(), "/mnt/mmclf/runs/r", RUN_ID, "c", "ns")["spec"]["predictor"]
    container = predictor["model"]["securityContext"]
    assert container["allowPrivilegeEscalation"] is False and container["capabilities"] == {"drop": ["ALL"]}
    assert container["runAsNonRoot"] is True and container["seccompProfile"] == {"type": "RuntimeDefault"}
    # The stock Triton runtime names no user and its image's is root: Triton's own triton-server, 1000:1000.
    assert (container["runAsUser"], container["runAsGroup"]) == (1000, 1000)
    assert predictor["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"},
                                            "runAsUser": 1000, "runAsGroup": 1000}
    other = inference_service(full_cfg("backend.serve.run_as_user=2000", "backend.serve.run_as_group=3000"),
                              "/mnt/mmclf/runs/r", RUN_ID, "c", "ns")["spec"]["predictor"]
    assert (other["securityContext"]["runAsUser"], other["model"]["securityContext"]["runAsGroup"]) == (2000, 3000)
    assert predictor["annotations"] == {"sidecar.istio.io/inject": "false"}
    meshed = inference_service(full_cfg("backend.serve.istio_sidecar=true"), "/mnt/mmclf/runs/r", RUN_ID, "c", "ns")
    assert "annotations" not in meshed["spec"]["predictor"], "the namespace's injection policy applies"


@pytest.mark.parametrize("run_name", ["mmclf-resnet18-cifar10-20260105-100000",
                                      "mmclf-swin-tiny-16xb64-in1k-imagenet-subset-20260105-100000-12",
                                      "9-Odd_Name"])
def test_derived_names_are_dns_1035_labels_of_at_most_45_characters(run_name):
    serve = OmegaConf.create({"name": None})
    name = service_name(serve, f"/mnt/mmclf/runs/{run_name}")
    assert DNS_1035.match(name) and len(name) <= MAX_NAME
    assert name == service_name(serve, f"/other/{run_name}"), "the same for every try"
    if len(run_name) <= MAX_NAME and DNS_1035.match(run_name):
        assert name == run_name
    longer = service_name(serve, f"/mnt/mmclf/runs/{run_name}-2")
    assert longer != name, "another run, another name"


def test_the_triton_config_takes_the_graphs_tensors_and_the_local_servers_model_name(capsys):
    config = triton_config(tiny_onnx(size=16, classes=3), max_batch_size=64)
    assert config.splitlines() == ['name: "mmclf"', 'backend: "onnxruntime"', "max_batch_size: 64",
                                   'input [ { name: "images" data_type: TYPE_UINT8 dims: [16, 16, 3] } ]',
                                   'output [ { name: "scores" data_type: TYPE_FP32 dims: [3] } ]']
    assert local_serve.MODEL_NAME == "mmclf"
    with pytest.raises(SystemExit):
        local_serve.main(["--help"])
    assert "(default mmclf," in " ".join(capsys.readouterr().out.split()), "python -m mmclf.serve serves it so too"


# --- the gate -------------------------------------------------------------------------------------


@pytest.mark.parametrize("gate, deploys, line", [
    (None, True, "val_accuracy_top-1=87.50, backend.serve.min_metric=null: deploying"),
    (87.5, True, "val_accuracy_top-1=87.50 reaches backend.serve.min_metric=87.5: deploying"),
    (90.0, False, "not deployed: val_accuracy_top-1=87.50 is below backend.serve.min_metric=90.0"),
])
def test_the_gate_compares_the_optimized_metric_with_min_metric(gate, deploys, line):
    cfg = OmegaConf.create({"optimized_metric": "val_accuracy_top-1", "backend": {"serve": {"min_metric": gate}}})
    assert passes_gate(cfg, {"val_accuracy_top-1": 87.5, "test_accuracy_top-1": 99.0}) == (deploys, line)

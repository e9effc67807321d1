"""backend=kfp, mode=compile: the compiled pipeline.yaml, read back with yaml, has the shape the cluster needs.

Compiled by kfp's own compiler from the real composed config; nothing of kfp is mocked. No cluster is
reachable here (the fixture below hides any kubeconfig): cluster look-ups are in test_kfp_cluster.py.
"""
import json
import re
from pathlib import Path

import pytest
import yaml
from kfp import components, dsl
from omegaconf import OmegaConf

from backends.kfp.backend import KfpBackend
from backends.kfp.compiling.naming import run_names
from backends.kfp.compiling.parameters import apply_parameters
from mmclf.errors import MMClfError
from mmclf.reports.jobs import JobContext
from mmclf.run.rundir import RunDir
from tests.conftest import closed_port_url, compose_cfg

STEP_TASKS = ["prepare-data", "train", "test", "export", "produce-metrics"]
POD_TASKS = ["volume-permissions", *STEP_TASKS]  # every task that runs in a pod
STEP_OF_TASK = {"prepare-data": "prepare_data", "train": "train", "test": "test", "export": "export",
                "produce-metrics": "metrics"}
TYPED = {"learning_rate": "NUMBER_DOUBLE", "epochs": "NUMBER_INTEGER", "batch_size": "NUMBER_INTEGER",
         "seed": "NUMBER_INTEGER"}


pytestmark = pytest.mark.usefixtures("no_cluster_access")  # tests/conftest.py


def compile_pipeline(run_dir, *overrides):
    """Compile like ``python -m mmclf backend=kfp OVERRIDES``; return (cfg, pipeline spec, kubernetes executors)."""
    cfg = compose_cfg(["backend=kfp", "data=synthetic", *overrides])
    metrics = KfpBackend().run(cfg, RunDir(run_dir), JobContext())
    assert metrics is None, "compile mode finishes no run, so it has no metrics"
    docs = list(yaml.safe_load_all((run_dir / "pipeline.yaml").read_text()))
    kubernetes = docs[1]["platforms"]["kubernetes"] if len(docs) > 1 else {}
    return cfg, docs[0], kubernetes


def tasks_of(spec):
    """Every task of the pipeline by name, those inside an exit handler's group too (a group is a task
    whose component is a DAG of its own)."""
    tasks = {}
    for name, task in spec["root"]["dag"]["tasks"].items():
        inner = spec["components"][task["componentRef"]["name"]].get("dag")
        tasks.update(inner["tasks"] if inner else {name: task})
    return tasks


def executor(spec, task_name):
    label = spec["components"][tasks_of(spec)[task_name]["componentRef"]["name"]]["executorLabel"]
    return label, spec["deploymentSpec"]["executors"][label]["container"]


def k8s_of(spec, kubernetes, task_name):
    return kubernetes["deploymentSpec"]["executors"][executor(spec, task_name)[0]]


def inputs_of(spec, task_name):
    return tasks_of(spec)[task_name]["inputs"]["parameters"]


def test_default_pipeline_runs_the_steps_in_order_on_a_new_volume(tmp_path, capsys):
    _, spec, _ = compile_pipeline(tmp_path)
    tasks = tasks_of(spec)
    assert sorted(tasks) == sorted(["createpvc", *POD_TASKS]), "no delete-volume unless asked for"
    assert tasks["createpvc"]["taskInfo"]["name"] == "create-volume"
    assert [tasks[name]["taskInfo"]["name"] for name in POD_TASKS] == POD_TASKS
    for upstream, task in zip(["createpvc", *POD_TASKS[:-1]], POD_TASKS, strict=True):
        assert upstream in tasks[task]["dependentTasks"], f"{task} must run after {upstream}"
    graph = (tmp_path / "pipeline_graph.md").read_text()
    assert "```mermaid" in graph
    for edge in ["createpvc --> volume_permissions", "volume_permissions --> prepare_data", "prepare_data --> train",
                 "train --> test", "test --> export", "export --> produce_metrics"]:
        assert edge in graph
    out = capsys.readouterr().out
    assert "Upload pipeline" in out and "backend.mode=submit backend.host=" in out


def test_each_step_task_runs_its_step_function_in_the_project_image(tmp_path):
    _, spec, _ = compile_pipeline(tmp_path, "backend.image=registry.example.com/mmclf:0.1.0")
    for task in STEP_TASKS:
        _, container = executor(spec, task)
        assert container["image"] == "registry.example.com/mmclf:0.1.0"
        source = container["command"][-1]
        assert f'run_in_pod("{STEP_OF_TASK[task]}", config_yaml, run_dir, run_id' in source
        assert "pip install" not in " ".join(container["command"]), "the image has kfp: nothing is installed"
        assert f"def {container['args'][-1]}(" in source, "KFP executes the embedded function"


def test_pod_tasks_mount_the_volume_and_set_pull_policy_and_no_task_is_cached(tmp_path):
    _, spec, kubernetes = compile_pipeline(tmp_path, "backend.image_pull_policy=Always",
                                           "backend.volume.mount_path=/mnt/shared")
    for task in POD_TASKS:
        (mount,) = k8s_of(spec, kubernetes, task)["pvcMount"]
        assert mount["mountPath"] == "/mnt/shared"
        assert mount["pvcNameParameter"]["taskOutputParameter"] == {"producerTask": "createpvc",
                                                                     "outputParameterKey": "name"}
        assert k8s_of(spec, kubernetes, task)["imagePullPolicy"] == "Always"
    for name, task in tasks_of(spec).items():
        assert not task.get("cachingOptions", {}).get("enableCache"), f"{name} must not be cached"


def test_train_and_test_request_the_accelerator_and_limits(tmp_path):
    _, spec, _ = compile_pipeline(tmp_path, "backend.resources.accelerator_count=2", "backend.resources.cpu=4",
                                  "backend.resources.memory=16Gi")
    for task in POD_TASKS:
        resources = executor(spec, task)[1].get("resources", {})
        if task in ("train", "test"):
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
            # train runs on one process per accelerator; test on one process, which needs one
            assert resources["accelerator"]["resourceCount"] == ("2" if task == "train" else "1")
            assert resources["resourceCpuLimit"] == "4" and resources["resourceMemoryLimit"] == "16Gi"
        else:
            assert resources == {}, f"{task} needs no accelerator"


def test_no_accelerator_when_count_is_zero(tmp_path):
    _, spec, _ = compile_pipeline(tmp_path, "backend.resources.accelerator_count=0")
    assert "resources" not in executor(spec, "train")[1]


def test_retries_and_timeout_apply_to_every_step_task(tmp_path):
    _, spec, kubernetes = compile_pipeline(tmp_path, "backend.retries=3", "backend.timeout_s=7200")
    for task in STEP_TASKS:
        assert tasks_of(spec)[task]["retryPolicy"]["maxRetryCount"] == 3
        assert k8s_of(spec, kubernetes, task)["activeDeadlineSeconds"] == "7200"


def test_no_retry_policy_by_default(tmp_path):
    _, spec, kubernetes = compile_pipeline(tmp_path)
    for task in STEP_TASKS:
        assert "retryPolicy" not in tasks_of(spec)[task]
        assert "activeDeadlineSeconds" not in k8s_of(spec, kubernetes, task)


def test_typed_parameters_default_to_the_config_and_reach_every_step(tmp_path):
    cfg, spec, _ = compile_pipeline(tmp_path, "schedule.optimizer.lr=0.00005", "seed=7", "data.samples_per_gpu=32",
                                    "schedule.runner.max_epochs=3", "backend.volume.storage_class=nfs-client")
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {*TYPED, "config_yaml"}
    assert {name: params[name]["parameterType"] for name in TYPED} == TYPED
    assert {name: params[name]["defaultValue"] for name in TYPED} == {
        "learning_rate": pytest.approx(5e-05), "epochs": 3, "batch_size": 32, "seed": 7}
    assert "schedule.optimizer.lr" in params["learning_rate"]["description"], "the UI says what each one overrides"
    for task in STEP_TASKS:
        inputs = inputs_of(spec, task)
        assert {key: inputs[key]["componentInputParameter"] for key in [*TYPED, "config_yaml"]} == {
            key: key for key in [*TYPED, "config_yaml"]}
    pod_cfg = OmegaConf.create(params["config_yaml"]["defaultValue"])  # what each pod rebuilds
    expected = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    expected["data"]["root"] = "/mnt/mmclf/data"
    expected["dist"]["nproc_per_node"] = 1  # auto, decided when compiling: the train pod's one GPU
    # links to the typed parameters (the splits' split_seed: ${seed}) stay links, resolved in the pod
    assert pod_cfg.data.val._get_node("split_seed")._value() == "${seed}"
    resolved = OmegaConf.to_container(OmegaConf.create(expected), resolve=True)
    assert OmegaConf.to_container(pod_cfg, resolve=True) == resolved
    assert pod_cfg.data.train.data_prefix.startswith("/mnt/mmclf/data/synthetic_")


def test_every_kfp_run_writes_a_fresh_folder_named_by_its_run_id(tmp_path, capsys):
    _, spec, _ = compile_pipeline(tmp_path)
    run_dirs = {inputs_of(spec, task)["run_dir"]["runtimeValue"]["constant"] for task in STEP_TASKS}
    (run_dir,) = run_dirs
    assert re.fullmatch(r"/mnt/mmclf/runs/mmclf-resnet18-synthetic-\d{8}-\d{6}", run_dir)
    for task in STEP_TASKS:
        # KFP's driver replaces an input that is exactly this placeholder (and only then) by the run's id.
        assert inputs_of(spec, task)["run_id"] == {"runtimeValue": {"constant": dsl.PIPELINE_JOB_ID_PLACEHOLDER}}
    assert f"each KFP run writes to {run_dir}-<KFP run id>" in capsys.readouterr().out


def test_the_config_parameter_keeps_the_typed_keys_linked(tmp_path):
    # schedule=fast's one-cycle peak follows the learning rate: a new rate from the UI must move it too.
    _, spec, _ = compile_pipeline(tmp_path, "schedule=fast", "backend.volume.storage_class=nfs-client")
    config_yaml = spec["root"]["inputDefinitions"]["parameters"]["config_yaml"]["defaultValue"]
    assert json.loads(config_yaml)["schedule"]["lr_config"]["max_lr"] == "${schedule.optimizer.lr}"
    assert json.loads(config_yaml)["schedule"]["momentum_config"]["pct_start"] == 0.25, "other links resolved"
    pod_cfg = apply_parameters(OmegaConf.create(config_yaml), {"learning_rate": 0.2, "epochs": 5})
    assert pod_cfg.schedule.lr_config.max_lr == pod_cfg.schedule.optimizer.lr == 0.2
    assert pod_cfg.schedule.runner.max_epochs == 5


def test_scheduling_options_reach_every_pod(tmp_path):
    _, spec, kubernetes = compile_pipeline(
        tmp_path, "+backend.node_selector={nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB, pool: training}",
        "backend.tolerations=[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule},"
        "{key: spot, value: 'true', effect: NoExecute, tolerationSeconds: 60}]",
        "backend.image_pull_secrets=[regcred,mirror]", "+backend.pod_labels={team: vision, cost-centre: cc-42}",
        "+backend.pod_annotations={sidecar.istio.io/inject: 'false'}")
    for task in POD_TASKS:
        settings = k8s_of(spec, kubernetes, task)
        assert settings["nodeSelector"] == {"labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
                                                       "pool": "training"}}
        assert settings["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute", "tolerationSeconds": "60"}]
        assert [secret["secretName"] for secret in settings["imagePullSecret"]] == ["regcred", "mirror"]
        assert settings["podMetadata"] == {"labels": {"team": "vision", "cost-centre": "cc-42"},
                                           "annotations": {"sidecar.istio.io/inject": "false"}}


def test_container_style_runs_the_pod_entry_point(tmp_path):
    _, spec, kubernetes = compile_pipeline(tmp_path, "backend.component=container")
    for task in STEP_TASKS:
        _, container = executor(spec, task)
        assert container["command"] == ["python", "-m", "backends.kfp.pod", STEP_OF_TASK[task]]
        options = ["config_yaml", "run_dir", "run_id", "learning_rate", "epochs", "batch_size", "seed"]
        expected = [[f"--{name.replace('_', '-')}", f"{{{{$.inputs.parameters['{name}']}}}}"] for name in options]
        assert container["args"][:14] == [arg for pair in expected for arg in pair]
        assert container["image"] == "mmclf:latest"
        assert "pvcMount" in k8s_of(spec, kubernetes, task)
    # the model leaves the volume after export, with the ONNX model beside the checkpoint
    assert executor(spec, "export")[1]["args"][-2:] == ["--model", "{{$.outputs.artifacts['model'].path}}"]
    assert "--model" not in executor(spec, "train")[1]["args"]
    outputs = spec["components"]["comp-produce-metrics"]["outputDefinitions"]["artifacts"]
    assert outputs["report"]["artifactType"]["schemaTitle"] == "system.HTML"


def test_python_style_outputs_are_what_the_kfp_ui_renders(tmp_path):
    _, spec, _ = compile_pipeline(tmp_path)
    outputs = spec["components"]["comp-produce-metrics"]["outputDefinitions"]["artifacts"]
    assert {name: out["artifactType"]["schemaTitle"] for name, out in outputs.items()} == {
        "metrics": "system.Metrics", "classification": "system.ClassificationMetrics", "report": "system.HTML"}
    (model,) = spec["components"]["comp-export"]["outputDefinitions"]["artifacts"].values()
    assert model["artifactType"]["schemaTitle"] == "system.Model"
    assert "outputDefinitions" not in spec["components"]["comp-train"], "one Model, once the ONNX model exists"


def test_pipeline_file_stays_when_submitting_fails(tmp_path):
    with pytest.raises(MMClfError):
        compile_pipeline(tmp_path, "backend.mode=submit", f"backend.host={closed_port_url()}",
                         "backend.volume.storage_class=nfs-client")
    spec = yaml.safe_load_all((tmp_path / "pipeline.yaml").read_text())
    assert "produce-metrics" in tasks_of(next(spec))


def test_compiled_file_is_valid_yaml_despite_its_comment_header(tmp_path):
    # kfp writes parameter defaults into a comment header; a multi-line default there would break the
    # file, which is why the config travels as one line of JSON.
    compile_pipeline(tmp_path)
    text = (tmp_path / "pipeline.yaml").read_text()
    header = text.split("\ncomponents:")[0].splitlines()
    assert all(line.startswith("#") for line in header)
    default = json.loads(next(yaml.safe_load_all(text))["root"]["inputDefinitions"]["parameters"]
                         ["config_yaml"]["defaultValue"])
    assert default["model"]["backbone"]["depth"] == 18
    loaded = components.load_component_from_file(str(tmp_path / "pipeline.yaml"))  # as an upload parses it
    assert loaded.name == "mmclf"
    assert sorted(loaded.component_spec.inputs) == sorted([*TYPED, "config_yaml", "storage_class"])


def test_run_names_come_from_the_config_and_the_hydra_job():
    name, display = run_names(compose_cfg(["backend=kfp", "data=synthetic"]), JobContext())  # a single run
    assert re.fullmatch(r"mmclf-resnet18-synthetic-\d{8}-\d{6}", name) and display == name
    overrides = ("backend=kfp", "backend.host=http://kfp", "model=resnet50_cifar", "schedule.optimizer.lr=0.05")
    job = JobContext(overrides=overrides, number=3, sweep_dir=Path("multirun/2026-11-29/10-00-00"))
    name, display = run_names(compose_cfg(list(overrides)), job)
    assert re.fullmatch(r"mmclf-resnet50-cifar10-\d{8}-\d{6}-3", name), "a sweep's jobs get their own folders"
    assert display == f"{name} model=resnet50_cifar schedule.optimizer.lr=0.05", "backend.* overrides left out"
    assert job.experiment == "mmclf-2026-11-29-10-00-00" and JobContext().experiment == "mmclf"

"""backend=kfp, mode=compile: the compiled pipeline.yaml, read back with yaml, has the shape the cluster needs.

Compiled by kfp's own compiler from the real composed config; nothing of kfp is mocked.
"""
import json
import re
from pathlib import Path

import pytest
import yaml
from kfp import components
from omegaconf import OmegaConf

from backends.kfp.backend import KfpBackend
from backends.kfp.naming import run_names, sweep_experiment
from mmclf.errors import ConfigError, MMClfError
from mmclf.jobs import JobContext
from mmclf.rundir import RunDir
from tests.conftest import closed_port_url, compose_cfg

STEP_TASKS = ["prepare-data", "train", "test", "produce-metrics"]
STEP_OF_TASK = {"prepare-data": "prepare_data", "train": "train", "test": "test", "produce-metrics": "metrics"}


def compile_pipeline(run_dir, *overrides):
    """Compile like ``python -m mmclf backend=kfp OVERRIDES``; return (cfg, pipeline spec, kubernetes executors)."""
    cfg = compose_cfg(["backend=kfp", "data=synthetic", *overrides])
    metrics = KfpBackend().run(cfg, RunDir(run_dir), JobContext())
    assert metrics is None, "compile mode finishes no run, so it has no metrics"
    docs = list(yaml.safe_load_all((run_dir / "pipeline.yaml").read_text()))
    kubernetes = docs[1]["platforms"]["kubernetes"] if len(docs) > 1 else {}
    return cfg, docs[0], kubernetes


def tasks_of(spec):
    return spec["root"]["dag"]["tasks"]


def executor(spec, task_name):
    label = spec["components"][tasks_of(spec)[task_name]["componentRef"]["name"]]["executorLabel"]
    return label, spec["deploymentSpec"]["executors"][label]["container"]


def test_default_pipeline_runs_the_steps_in_order_on_a_new_volume(tmp_path, capsys):
    _, spec, _ = compile_pipeline(tmp_path)
    tasks = tasks_of(spec)
    assert sorted(tasks) == sorted(["createpvc", *STEP_TASKS]), "no delete-volume unless asked for"
    assert tasks["createpvc"]["taskInfo"]["name"] == "create-volume"
    assert [tasks[name]["taskInfo"]["name"] for name in STEP_TASKS] == STEP_TASKS
    for upstream, task in zip(["createpvc", *STEP_TASKS], STEP_TASKS, strict=False):
        assert upstream in tasks[task]["dependentTasks"], f"{task} must run after {upstream}"
    graph = (tmp_path / "pipeline_graph.md").read_text()
    assert "```mermaid" in graph
    for edge in ["createpvc --> prepare_data", "prepare_data --> train", "train --> test", "test --> produce_metrics"]:
        assert edge in graph
    out = capsys.readouterr().out
    assert "Upload pipeline" in out and "backend.mode=submit backend.host=" in out


def test_each_step_task_runs_its_step_function_in_the_project_image(tmp_path):
    _, spec, _ = compile_pipeline(tmp_path, "backend.image=registry.example.com/mmclf:0.1.0")
    for task in STEP_TASKS:
        _, container = executor(spec, task)
        assert container["image"] == "registry.example.com/mmclf:0.1.0"
        source = container["command"][-1]
        assert f'run_from_yaml("{STEP_OF_TASK[task]}", config_yaml, run_dir)' in source
        assert "pip install" not in " ".join(container["command"]), "the image has kfp: nothing is installed"
        assert f"def {container['args'][-1]}(" in source, "KFP executes the embedded function"


def test_step_tasks_mount_the_volume_and_set_pull_policy_and_no_task_is_cached(tmp_path):
    _, spec, kubernetes = compile_pipeline(tmp_path, "backend.image_pull_policy=Always",
                                           "backend.volume.mount_path=/mnt/shared")
    executors = kubernetes["deploymentSpec"]["executors"]
    for task in STEP_TASKS:
        label, _ = executor(spec, task)
        (mount,) = executors[label]["pvcMount"]
        assert mount["mountPath"] == "/mnt/shared"
        assert mount["pvcNameParameter"]["taskOutputParameter"] == {"producerTask": "createpvc",
                                                                     "outputParameterKey": "name"}
        assert executors[label]["imagePullPolicy"] == "Always"
    for name, task in tasks_of(spec).items():
        assert not task.get("cachingOptions", {}).get("enableCache"), f"{name} must not be cached"


def test_create_volume_requests_the_configured_claim(tmp_path):
    _, spec, _ = compile_pipeline(tmp_path, "backend.volume.size=50Gi", "backend.volume.storage_class=nfs-client",
                                  "backend.volume.access_modes=[ReadWriteOnce]")
    inputs = tasks_of(spec)["createpvc"]["inputs"]["parameters"]
    constants = {key: value["runtimeValue"]["constant"] for key, value in inputs.items()}
    assert constants == {"size": "50Gi", "storage_class_name": "nfs-client", "access_modes": ["ReadWriteOnce"],
                         "pvc_name_suffix": "-mmclf"}


def test_train_and_test_request_the_accelerator_and_limits(tmp_path):
    _, spec, _ = compile_pipeline(tmp_path, "backend.resources.accelerator_count=2", "backend.resources.cpu=4",
                                  "backend.resources.memory=16Gi")
    for task in STEP_TASKS:
        resources = executor(spec, task)[1].get("resources", {})
        if task in ("train", "test"):
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert resources["accelerator"]["resourceCount"] == "2"
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
        label, _ = executor(spec, task)
        assert kubernetes["deploymentSpec"]["executors"][label]["activeDeadlineSeconds"] == "7200"


def test_no_retry_policy_by_default(tmp_path):
    _, spec, kubernetes = compile_pipeline(tmp_path)
    for task in STEP_TASKS:
        assert "retryPolicy" not in tasks_of(spec)[task]
        assert "activeDeadlineSeconds" not in kubernetes["deploymentSpec"]["executors"][executor(spec, task)[0]]


def test_parameters_carry_the_resolved_config_with_data_on_the_volume(tmp_path):
    cfg, spec, _ = compile_pipeline(tmp_path, "schedule.optimizer.lr=0.00005")
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"config_yaml", "run_dir"}
    run_dir = params["run_dir"]["defaultValue"]
    assert run_dir.startswith("/mnt/mmclf/runs/mmclf-resnet18-synthetic-")
    pod_cfg = OmegaConf.create(params["config_yaml"]["defaultValue"])  # what each pod rebuilds
    expected = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    expected["data"]["root"] = "/mnt/mmclf/data"
    assert OmegaConf.to_container(pod_cfg) == OmegaConf.to_container(OmegaConf.create(expected), resolve=True)
    assert pod_cfg.data.train.data_prefix.startswith("/mnt/mmclf/data/synthetic_")
    assert pod_cfg.schedule.optimizer.lr == pytest.approx(5e-05)
    for task in STEP_TASKS:
        inputs = tasks_of(spec)[task]["inputs"]["parameters"]
        assert {key: value["componentInputParameter"] for key, value in inputs.items()} == {
            "config_yaml": "config_yaml", "run_dir": "run_dir"}


def test_delete_volume_runs_last_on_the_created_claim(tmp_path):
    _, spec, _ = compile_pipeline(tmp_path, "backend.volume.delete_after=true")
    delete = tasks_of(spec)["deletepvc"]
    assert delete["taskInfo"]["name"] == "delete-volume"
    assert "produce-metrics" in delete["dependentTasks"]
    assert delete["inputs"]["parameters"]["pvc_name"]["taskOutputParameter"]["producerTask"] == "createpvc"
    assert "deletepvc --> " not in (tmp_path / "pipeline_graph.md").read_text()


def test_existing_claim_is_mounted_by_name_and_nothing_is_created(tmp_path):
    _, spec, kubernetes = compile_pipeline(tmp_path, "backend.volume.mode=existing",
                                           "backend.volume.claim_name=mmclf-data", "backend.volume.delete_after=true")
    assert sorted(tasks_of(spec)) == sorted(STEP_TASKS)
    for task in STEP_TASKS:
        (mount,) = kubernetes["deploymentSpec"]["executors"][executor(spec, task)[0]]["pvcMount"]
        assert mount["pvcNameParameter"]["runtimeValue"]["constant"] == "mmclf-data"
        assert mount["mountPath"] == "/mnt/mmclf"


def test_workspace_mode_uses_the_kfp_run_workspace(tmp_path):
    _, spec, kubernetes = compile_pipeline(tmp_path, "backend.volume.mode=workspace", "backend.volume.size=5Gi",
                                           "backend.volume.storage_class=nfs-client")
    assert sorted(tasks_of(spec)) == sorted(STEP_TASKS)
    assert kubernetes["pipelineConfig"]["workspace"] == {
        "size": "5Gi",
        "kubernetes": {"pvcSpecPatch": {"accessModes": ["ReadWriteMany"], "storageClassName": "nfs-client"}}}
    executors = kubernetes["deploymentSpec"]["executors"]
    assert all("pvcMount" not in executors[executor(spec, task)[0]] for task in STEP_TASKS)
    params = spec["root"]["inputDefinitions"]["parameters"]
    # The workspace's mount path: the driver mounts the workspace into tasks whose parameters name it.
    assert params["run_dir"]["defaultValue"].startswith("/kfp-workspace/runs/")
    assert OmegaConf.create(params["config_yaml"]["defaultValue"]).data.root == "/kfp-workspace/data"


def test_container_style_runs_the_pod_entry_point(tmp_path):
    _, spec, kubernetes = compile_pipeline(tmp_path, "backend.component=container")
    for task in STEP_TASKS:
        _, container = executor(spec, task)
        assert container["command"] == ["python", "-m", "backends.kfp.pod", STEP_OF_TASK[task]]
        assert container["args"][:4] == ["--config-yaml", "{{$.inputs.parameters['config_yaml']}}",
                                         "--run-dir", "{{$.inputs.parameters['run_dir']}}"]
        assert container["image"] == "mmclf:latest"
        assert "pvcMount" in kubernetes["deploymentSpec"]["executors"][executor(spec, task)[0]]
    outputs = spec["components"]["comp-produce-metrics"]["outputDefinitions"]["artifacts"]
    assert outputs["report"]["artifactType"]["schemaTitle"] == "system.Markdown"


def test_python_style_metrics_are_what_the_kfp_ui_renders(tmp_path):
    _, spec, _ = compile_pipeline(tmp_path)
    outputs = spec["components"]["comp-produce-metrics"]["outputDefinitions"]["artifacts"]
    assert {name: out["artifactType"]["schemaTitle"] for name, out in outputs.items()} == {
        "metrics": "system.Metrics", "classification": "system.ClassificationMetrics", "report": "system.Markdown"}


def test_a_config_too_large_for_a_kfp_parameter_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="10,000"):
        compile_pipeline(tmp_path, f"+data.notes={'x' * 10_000}")
    assert list(tmp_path.iterdir()) == [], "nothing is written"


@pytest.mark.parametrize("override, key", [
    ("backend.volume.size=20GB", "backend.volume.size"),
    ("backend.volume.size=0Gi", "backend.volume.size"),
    ("backend.volume.access_modes=[]", "backend.volume.access_modes"),
    ("backend.volume.access_modes=[ReadWriteSometimes]", "backend.volume.access_modes"),
    ("backend.volume.mount_path=mnt", "backend.volume.mount_path"),
    ("backend.volume.pvc_name_suffix=_Claim", "backend.volume.pvc_name_suffix"),
    ("backend.volume.pvc_name_suffix=-mmclf-", "backend.volume.pvc_name_suffix"),
    (f"backend.volume.pvc_name_suffix=-{'x' * 27}", "backend.volume.pvc_name_suffix"),
    ("backend.volume.mode=existing", "backend.volume.claim_name"),
    ("backend.resources.accelerator_count=-1", "backend.resources.accelerator_count"),
    ("backend.resources.accelerator_type=null", "backend.resources.accelerator_type"),
    ("backend.resources.cpu=four", "backend.resources.cpu"),
    ("backend.resources.memory=16GB", "backend.resources.memory"),
    ("backend.retries=-1", "backend.retries"),
    ("backend.timeout_s=0", "backend.timeout_s"),
])
def test_bad_volume_or_resource_values_fail_before_compiling(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compile_pipeline(tmp_path, override)
    assert list(tmp_path.iterdir()) == [], "nothing is compiled"


def test_pipeline_file_stays_when_submitting_fails(tmp_path):
    # Port 9 (discard) is closed here: the submit client fails at once with a user-facing error.
    with pytest.raises(MMClfError):
        compile_pipeline(tmp_path, "backend.mode=submit", f"backend.host={closed_port_url()}")
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
    assert loaded.name == "mmclf" and list(loaded.component_spec.inputs) == ["config_yaml", "run_dir"]


def test_run_names_come_from_the_config_and_the_hydra_job():
    name, display = run_names(compose_cfg(["backend=kfp", "data=synthetic"]), JobContext())  # a single run
    assert re.fullmatch(r"mmclf-resnet18-synthetic-\d{8}-\d{6}", name) and display == name
    overrides = ("backend=kfp", "backend.host=http://kfp", "model=resnet50_cifar", "schedule.optimizer.lr=0.05")
    job = JobContext(overrides=overrides, number=3, sweep_dir=Path("multirun/2026-11-29/10-00-00"))
    name, display = run_names(compose_cfg(list(overrides)), job)
    assert re.fullmatch(r"mmclf-resnet50-cifar10-\d{8}-\d{6}-3", name), "a sweep's jobs get their own folders"
    assert display == f"{name} model=resnet50_cifar schedule.optimizer.lr=0.05", "backend.* overrides left out"
    assert sweep_experiment(job) == "mmclf-2026-11-29-10-00-00" and sweep_experiment(JobContext()) is None

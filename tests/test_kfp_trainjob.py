"""backend=kfp with several GPUs (torchrun in the train pod) and several nodes (a Kubeflow Trainer TrainJob).

The compiled pipeline is read back from pipeline.yaml; the TrainJob manifest is checked against Kubeflow
Trainer v2.3's own Python models (kubeflow-trainer-api 2.3.0) and the rules its webhook applies; the train
task's launcher against the loopback Kubernetes API is in test_kfp_trainjob_cluster.py (how its TrainJob
ends: test_kfp_trainjob_endings.py), the preflight in test_kfp_trainjob_preflight.py.
No cluster, no Trainer controller: what a real TrainJob does on nodes is not checked here.
"""
import json
import re

import pytest
import yaml
from kfp import dsl
from kubeflow_trainer_api import models

from backends.kfp.backend import KfpBackend
from backends.kfp.compiling.compile import pod_config_yaml
from backends.kfp.trainjob.manifest import NODE, PATCH_MANAGER, trainjob_manifest, trainjob_name
from mmclf.errors import ConfigError
from mmclf.reports.jobs import JobContext
from mmclf.run.rundir import RunDir
from mmclf.steps.__main__ import parse_args
from tests.conftest import compose_cfg
from tests.k8s_trainer import strict_decoding_error, training_runtime
from tests.test_kfp_pipeline import compile_pipeline, executor, inputs_of, k8s_of, tasks_of

TRAINJOB = ["backend.distributed=trainjob", "dist.nnodes=2", "backend.resources.accelerator_count=4"]
RUN_ID = "3f2b9a4e-51c7-4d0e-9a61-0c8e7d2f4b15"  # a KFP run id: a UUID
# k8s.io/apimachinery's IsDomainPrefixedPath, which Trainer's webhook applies to runtimePatches[].manager.
DOMAIN_PREFIXED_PATH = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
                                  r"/[A-Za-z0-9/\-._~%!$&'()*+,;=:]+$")
TORCHRUN_RESERVED = {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}


def compile_run(run_dir, *overrides):
    cfg = compose_cfg(["backend=kfp", "data=synthetic", *overrides])
    KfpBackend().run(cfg, RunDir(run_dir), JobContext())
    docs = list(yaml.safe_load_all((run_dir / "pipeline.yaml").read_text()))
    return docs[0], docs[1]["platforms"]["kubernetes"]


def compiled_config(spec) -> dict:
    return json.loads(spec["root"]["inputDefinitions"]["parameters"]["config_yaml"]["defaultValue"])


def shm_of(spec, kubernetes, task):
    return k8s_of(spec, kubernetes, task).get("emptyDirMounts")


# --- several GPUs in the train pod ---------------------------------------------------------------


@pytest.mark.usefixtures("no_cluster_access")
def test_n_accelerators_give_the_train_task_n_processes_and_a_memory_backed_shm(tmp_path):
    spec, kubernetes = compile_run(tmp_path, "backend.resources.accelerator_count=4")
    assert compiled_config(spec)["dist"] == {"nproc_per_node": 4, "nnodes": 1}, "auto, decided when compiling"
    for task, accelerators in (("train", "4"), ("test", "1")):  # the test step runs on one process
        assert executor(spec, task)[1]["resources"]["accelerator"]["resourceCount"] == accelerators
        assert shm_of(spec, kubernetes, task) == [{"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory",
                                                   "sizeLimit": "8Gi"}]
    for task in ("prepare-data", "produce-metrics"):
        assert shm_of(spec, kubernetes, task) is None
    assert not (tmp_path / "trainjob.yaml").exists(), "backend.distributed=pod creates no TrainJob"


@pytest.mark.usefixtures("no_cluster_access")
@pytest.mark.parametrize("overrides, processes", [
    ([], 1),  # the default: one GPU, one process, as before
    (["backend.resources.accelerator_count=0"], 1),  # no GPU asked for: one, whatever the node has
    (["backend.resources.accelerator_count=0", "dist.nproc_per_node=3"], 3),  # gloo processes on the CPU
    (["backend.resources.accelerator_count=4", "dist.nproc_per_node=2"], 2),
    (["backend.resources.accelerator_count=4", "device=cpu"], 1),  # auto on the CPU: one process, as locally
])
def test_processes_per_train_pod(tmp_path, overrides, processes):
    spec, _ = compile_run(tmp_path, *overrides)
    assert compiled_config(spec)["dist"]["nproc_per_node"] == processes


@pytest.mark.usefixtures("no_cluster_access")
def test_shm_size_sets_or_leaves_out_the_shm_volume(tmp_path):
    spec, kubernetes = compile_run(tmp_path, "backend.resources.shm_size=32Gi")
    assert shm_of(spec, kubernetes, "train")[0]["sizeLimit"] == "32Gi"
    spec, kubernetes = compile_run(tmp_path, "backend.resources.shm_size=null")
    assert shm_of(spec, kubernetes, "train") is None


# --- several nodes: the compiled pipeline and trainjob.yaml ---------------------------------------


@pytest.mark.usefixtures("no_cluster_access")
def test_trainjob_compiles_a_launcher_train_task_and_writes_the_trainjob_for_review(tmp_path, capsys):
    spec, kubernetes = compile_run(tmp_path, *TRAINJOB)
    assert "resources" not in executor(spec, "train")[1], "the launcher waits: the nodes get the GPUs"
    assert shm_of(spec, kubernetes, "train") is None
    assert inputs_of(spec, "train")["claim_name"] == {"taskOutputParameter": {"producerTask": "createpvc",
                                                                              "outputParameterKey": "name"}}
    assert executor(spec, "test")[1]["resources"]["accelerator"]["resourceCount"] == "1"  # one process tests
    assert compiled_config(spec)["dist"] == {"nproc_per_node": 4, "nnodes": 2}
    text = (tmp_path / "trainjob.yaml").read_text()
    assert text.startswith("# The TrainJob the train task creates") and "<run-id>" in text.splitlines()[0]
    manifest = yaml.safe_load(text)
    assert models.TrainerV1alpha1TrainJob.from_dict(manifest).to_dict() == manifest
    trainer = manifest["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    assert trainer["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": "4"}}
    pod = manifest["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert pod["template"]["spec"]["template"]["spec"]["volumes"][0] == {
        "name": "mmclf-volume", "persistentVolumeClaim": {"claimName": "<claim>"}}
    assert "trainjob written:" in capsys.readouterr().out


@pytest.mark.usefixtures("no_cluster_access")
def test_an_existing_claim_is_named_in_the_train_task_and_the_trainjob(tmp_path):
    spec, _ = compile_run(tmp_path, *TRAINJOB, "backend.volume.mode=existing", "backend.volume.claim_name=shared")
    assert inputs_of(spec, "train")["claim_name"] == {"runtimeValue": {"constant": "shared"}}
    manifest = yaml.safe_load((tmp_path / "trainjob.yaml").read_text())
    assert "claimName: shared" in yaml.safe_dump(manifest)


@pytest.mark.usefixtures("no_cluster_access")
@pytest.mark.parametrize("overrides, message", [
    (["dist.nnodes=2"], r"^dist\.nnodes=2 with backend\.distributed=pod: .*set backend\.distributed=trainjob"),
    ([*TRAINJOB, "backend.volume.access_modes=[ReadWriteOnce]"],
     r"^backend\.distributed=trainjob with backend\.volume\.access_modes=\['ReadWriteOnce'\]: .*"
     r"backend\.volume\.access_modes=\[ReadWriteMany\]"),
    (["backend.resources.accelerator_count=2", "dist.nproc_per_node=4"],
     r"^dist\.nproc_per_node=4 with backend\.resources\.accelerator_count=2: .*dist\.nproc_per_node=auto \(= 2\)"),
    ([*TRAINJOB, "backend.volume.mode=workspace"], r"backend\.volume\.mode=workspace: .*mode=create or existing"),
    ([*TRAINJOB, "backend.mode=local"], r"backend\.mode=local: .*backend\.distributed=pod"),
    (["backend.resources.shm_size=lots"], r"^backend\.resources\.shm_size='lots': .*8Gi"),
])
def test_what_cannot_run_is_refused_in_one_line_before_anything_is_written(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as refused:
        compile_run(tmp_path, *overrides)
    assert "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []


# --- the manifest against Trainer v2.3's API ----------------------------------------------------


def full_cfg(*overrides):
    """A config with every pod setting the TrainJob carries over, as the train task rebuilds it."""
    cfg = compose_cfg(["backend=kfp", "data=synthetic", *TRAINJOB, "backend.image=registry.example.com/mmclf:0.1.0",
                       "backend.image_pull_secrets=[regcred]", "+backend.node_selector={pool: gpu}",
                       "backend.tolerations=[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
                       "+backend.pod_labels={team: vision}",
                       "+backend.pod_annotations={example.com/owner: vision}",
                       "backend.resources.cpu=8", "backend.resources.memory=64Gi", "backend.timeout_s=86400",
                       *overrides])
    from omegaconf import OmegaConf

    return OmegaConf.create(pod_config_yaml(cfg, "/mnt/mmclf/data"))


def test_the_manifest_is_a_trainer_v2_3_trainjob_field_for_field():
    manifest = trainjob_manifest(full_cfg(), "/mnt/mmclf/runs/r", RUN_ID, "claim-1", "team-a")
    # from_dict ignores fields the model lacks, so compare the round trip: a field Trainer v2.3 does not
    # have (a misspelling, or one the API never had) would be dropped and show here.
    assert models.TrainerV1alpha1TrainJob.from_dict(manifest).to_dict() == manifest
    wrong = json.loads(json.dumps(manifest))
    patch = wrong["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    patch["template"]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Always"  # no such field
    assert models.TrainerV1alpha1TrainJob.from_dict(wrong).to_dict() != wrong, "the round trip catches it"

    pod = patch_of(manifest)
    assert pod["nodeSelector"] == {"pool": "gpu"} and pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    # What Pod Security restricted (a profile namespace may enforce it) asks of the pod and its container.
    assert pod["securityContext"] == {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"}}

    assert pod["volumes"] == [{"name": "mmclf-volume", "persistentVolumeClaim": {"claimName": "claim-1"}},
                              {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]
    (container,) = pod["containers"]
    assert container["volumeMounts"] == [{"name": "mmclf-volume", "mountPath": "/mnt/mmclf"},
                                         {"name": "dshm", "mountPath": "/dev/shm"}]
    trainer = manifest["spec"]["trainer"]
    assert trainer["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": "4", "cpu": "8", "memory": "64Gi"}}
    assert trainer["image"] == "registry.example.com/mmclf:0.1.0"
    assert manifest["spec"]["activeDeadlineSeconds"] == 86400
    assert manifest["metadata"]["labels"]["pipeline/runid"] == RUN_ID and manifest["metadata"]["namespace"] == "team-a"
    template = manifest["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    # The pipeline's pod labels and annotations, and no Istio sidecar (as label and annotation: Istio reads
    # either, by version) in a profile namespace: it would outlive the training container (kubeflow/trainer#1778).
    assert template["template"]["spec"]["template"]["metadata"] == {
        "labels": {"team": "vision", "sidecar.istio.io/inject": "false"},
        "annotations": {"example.com/owner": "vision", "sidecar.istio.io/inject": "false"}}


def test_a_namespaced_training_runtime_is_referenced_as_one():
    manifest = trainjob_manifest(full_cfg("backend.trainjob.runtime=torch-team", "backend.trainjob.runtime_kind="
                                          "TrainingRuntime"), "/mnt/mmclf/runs/r", RUN_ID, "claim-1", "team-a")
    assert models.TrainerV1alpha1TrainJob.from_dict(manifest).to_dict() == manifest
    assert manifest["spec"]["runtimeRef"] == {"name": "torch-team", "apiGroup": "trainer.kubeflow.org",
                                              "kind": "TrainingRuntime"}


def patch_of(manifest):
    (patch,) = manifest["spec"]["runtimePatches"]
    (job,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    return job["template"]["spec"]["template"]["spec"]


def test_the_manifest_keeps_the_rules_trainers_webhook_and_crd_apply():
    manifest = trainjob_manifest(full_cfg(), "/mnt/mmclf/runs/r", RUN_ID, "claim-1", "team-a")
    name = manifest["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, "the CRD's RFC 1035 rule"
    assert len(f"{name}-node-0-0") <= 63, "JobSet's pod host names"
    assert trainjob_name(RUN_ID.upper()) == name, "the same name for every try"
    (patch,) = manifest["spec"]["runtimePatches"]
    assert DOMAIN_PREFIXED_PATH.match(patch["manager"]) and patch["manager"] == PATCH_MANAGER
    # Patched replicated jobs and containers must exist in the runtime: torch-distributed's are both "node".
    runtime_job = training_runtime()["spec"]["template"]["spec"]["replicatedJobs"][0]
    assert NODE == runtime_job["name"] == runtime_job["template"]["spec"]["template"]["spec"]["containers"][0]["name"]
    assert patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["name"] == NODE
    assert [c["name"] for c in patch_of(manifest)["containers"]] == [NODE]
    assert "env" not in patch_of(manifest)["containers"][0], "the webhook refuses env on the node container"
    assert not TORCHRUN_RESERVED & {e["name"] for e in manifest["spec"]["trainer"]["env"]}


def test_each_node_runs_the_step_entry_point_on_the_runs_folder():
    manifest = trainjob_manifest(full_cfg(), "/mnt/mmclf/runs/r", RUN_ID, "claim-1", "team-a")
    trainer = manifest["spec"]["trainer"]
    python, *arguments = trainer["command"]
    assert python == "python" and arguments[:2] == ["-m", "mmclf.steps"] and "args" not in trainer
    node = parse_args(arguments[2:])  # what the node's step entry point makes of them
    assert (node.name, node.run_dir, node.config) == ("train", f"/mnt/mmclf/runs/r-{RUN_ID}", None), \
        "the node reads the config prepare-data recorded in the run's folder"


def test_each_manifest_decodes_strictly_under_the_trainer_it_is_for():
    current, v2_1 = (trainjob_manifest(full_cfg(), "/mnt/mmclf/runs/r", RUN_ID, "claim-1", "team-a", trainer_v2_1=old)
                     for old in (False, True))
    assert strict_decoding_error(current, "v2.3") == "" and strict_decoding_error(v2_1, "v2.1") == ""
    assert 'unknown field "spec.runtimePatches", unknown field "spec.activeDeadlineSeconds"' in \
        strict_decoding_error(current, "v2.1"), "v2.1 has neither: the launcher falls back to podTemplateOverrides"
    assert 'unknown field "spec.podTemplateOverrides"' in strict_decoding_error(v2_1, "v2.3")


@pytest.mark.usefixtures("no_cluster_access")
def test_a_trainjob_run_ends_with_a_clean_up_task_whatever_its_outcome(tmp_path):
    _, spec, kubernetes = compile_pipeline(tmp_path, *TRAINJOB)
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "clean-up"}, "every other task runs inside the exit handler"
    assert root["clean-up"]["dependentTasks"] == ["exit-handler-1"]
    assert root["clean-up"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED", "failed or stopped too"
    inner = spec["components"][root["exit-handler-1"]["componentRef"]["name"]]["dag"]["tasks"]
    assert {"createpvc", "volume-permissions", "train", "produce-metrics"} <= set(inner)
    assert inputs_of(spec, "clean-up")["run_id"] == {"runtimeValue": {"constant": dsl.PIPELINE_JOB_ID_PLACEHOLDER}}
    assert "pvcMount" not in k8s_of(spec, kubernetes, "clean-up"), "it needs no volume"
    pod = tasks_of(compile_pipeline(tmp_path / "pod")[1])
    assert "clean-up" not in pod, "backend.distributed=pod: nothing to clean"

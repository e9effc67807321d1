"""backend=kfp with several GPUs (torchrun in the train pod) and several nodes (a Kubeflow Trainer TrainJob).

The compiled pipeline is read back from pipeline.yaml; the TrainJob manifest is checked against Kubeflow
Trainer v2.3's own Python models (kubeflow-trainer-api 2.3.0) and the rules its webhook applies; the train
task's launcher runs for real against the loopback Kubernetes API of tests/k8s_server.py. No cluster,
no Trainer controller: what a real TrainJob does on nodes is not checked here.
"""
import json
import logging
import os
import re
import signal
import sys
import threading
import types
import uuid

import pytest
import yaml
from kubeflow_trainer_api import models

from backends.kfp.backend import KfpBackend
from backends.kfp.compile import pod_config_yaml
from backends.kfp.launcher import Stopped
from backends.kfp.pod import run_in_pod
from backends.kfp.preflight import PreflightFailed
from backends.kfp.trainjob import NODE, PATCH_MANAGER, trainjob_manifest, trainjob_name
from mmclf.errors import ConfigError
from mmclf.jobs import JobContext
from mmclf.rundir import RunDir
from tests import test_kfp_cluster
from tests.conftest import compose_cfg
from tests.k8s_server import COMPLETE, FAILED, RUNNING, node, storage_class, training_runtime
from tests.test_kfp_pipeline import executor, inputs_of, k8s_of

NFS = "cluster.local/nfs-subdir-external-provisioner"
kube = test_kfp_cluster.kube  # the fixture: a fake cluster behind $KUBECONFIG, as on a workstation
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
                       "+backend.pod_annotations={sidecar.istio.io/inject: 'false'}",
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
    assert pod["securityContext"] == {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True}
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
    assert template["template"]["spec"]["template"]["metadata"] == {
        "labels": {"team": "vision"}, "annotations": {"sidecar.istio.io/inject": "false"}}


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


def test_each_node_runs_the_train_pods_step_entry_with_a_config_that_trains():
    manifest = trainjob_manifest(full_cfg(), "/mnt/mmclf/runs/r", RUN_ID, "claim-1", "team-a")
    trainer = manifest["spec"]["trainer"]
    assert trainer["command"] == ["python", "-m", "backends.kfp.pod", "train"]
    args = trainer["args"]
    assert args[2:] == ["--run-dir", "/mnt/mmclf/runs/r", "--run-id", RUN_ID]
    node = json.loads(args[1])
    assert node["backend"]["distributed"] == "pod", "a node trains; it creates no TrainJob of its own"
    assert node["dist"] == {"nproc_per_node": 4, "nnodes": 2}


# --- the launcher against a loopback Kubernetes API ---------------------------------------------


def train_task(tmp_path, *overrides):
    """What the train task's pod does: run_in_pod with the compiled config parameter and the run id."""
    cfg = compose_cfg(["backend=kfp", "data=synthetic", *TRAINJOB, "backend.trainjob.poll_interval_s=0.01",
                       *overrides])
    config_yaml = pod_config_yaml(cfg, "/mnt/mmclf/data")
    (tmp_path / "runs" / f"job-{RUN_ID}").mkdir(parents=True, exist_ok=True)  # prepare-data made it
    return run_in_pod("train", config_yaml, str(tmp_path / "runs" / "job"), RUN_ID, claim_name="claim-1",
                      learning_rate=0.05, epochs=3, batch_size=16, seed=1)


def trainjob_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("trainjob ")]


def test_the_train_task_creates_the_trainjob_logs_each_change_and_deletes_it_when_complete(tmp_path, kube, caplog):
    caplog.set_level(logging.INFO)
    cluster = kube()
    _, folder = train_task(tmp_path)
    name = f"mmclf-{RUN_ID}"
    (created,) = cluster.created
    assert created["metadata"]["name"] == name and created["metadata"]["namespace"] == "kubeflow"
    node = json.loads(created["spec"]["trainer"]["args"][1])
    assert node["schedule"]["optimizer"]["lr"] == 0.05 and node["schedule"]["runner"]["max_epochs"] == 3, \
        "the nodes train with the run's pipeline parameters"
    assert created["spec"]["trainer"]["args"][3] == str(tmp_path / "runs" / "job")
    lines = trainjob_lines(caplog)
    assert lines[0].startswith(f"trainjob {name}: created in namespace kubeflow (2 nodes x 4 processes")
    states = [line.split(": ", 1)[1] for line in lines[1:-1]]
    assert states == ["no status yet (waiting for the Trainer controller)",
                      "job node: 2 active, 0 ready, 0 succeeded, 0 failed",
                      "job node: 2 active, 2 ready, 0 succeeded, 0 failed",
                      "Complete=True (AllJobsCompleted: jobset completed successfully); "
                      "job node: 0 active, 0 ready, 2 succeeded, 0 failed"], "each change once"
    assert "deleted (it completed" in lines[-1] and cluster.deleted == [name]
    record = json.loads((folder / "steps.json").read_text())["train"]
    assert record["world_size"] == 8
    assert str(folder) == f"{tmp_path / 'runs' / 'job'}-{RUN_ID}"



def test_a_retried_task_whose_training_is_recorded_done_creates_no_trainjob(tmp_path, kube, monkeypatch):
    cluster = kube()
    train_task(tmp_path)
    # The nodes left the final checkpoint (run_step trusts a record only then); the fake trains nothing.
    monkeypatch.setitem(sys.modules, "mmclf.steps.train", types.SimpleNamespace(outputs_intact=lambda *_: True))
    train_task(tmp_path)
    assert len(cluster.created) == 1


def test_keep_trainjob_keeps_a_completed_trainjob(tmp_path, kube):
    cluster = kube()
    train_task(tmp_path, "backend.keep_trainjob=true")
    assert cluster.deleted == [] and list(cluster.trainjobs) == [f"mmclf-{RUN_ID}"]


def test_a_failed_trainjob_ends_the_task_in_one_line_and_is_kept_for_its_logs(tmp_path, kube, capsys):
    cluster = kube(trainjob_statuses=FAILED)
    with pytest.raises(SystemExit) as ended:
        train_task(tmp_path)
    assert ended.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmclf: error:")]
    name = f"mmclf-{RUN_ID}"
    assert f"TrainJob {name} in namespace kubeflow failed (FailedJobs: jobset failed with failed job node-1)" in line
    assert f"kubectl logs -n kubeflow -l jobset.sigs.k8s.io/jobset-name={name} --prefix --tail=-1" in line
    assert cluster.deleted == [], "kept: its pods' logs say why"
    assert not (tmp_path / "runs" / f"job-{RUN_ID}" / "steps.json").exists(), "train is not recorded done"


def test_a_retried_task_waits_for_the_running_trainjob_of_an_earlier_try(tmp_path, kube):
    earlier = {"metadata": {"name": f"mmclf-{RUN_ID}", "namespace": "kubeflow"}, "spec": {}}
    cluster = kube(trainjobs={f"mmclf-{RUN_ID}": earlier})
    train_task(tmp_path)
    assert cluster.created == [] and cluster.deleted == [f"mmclf-{RUN_ID}"]


def test_a_retried_task_replaces_the_failed_trainjob_of_an_earlier_try(tmp_path, kube):
    name = f"mmclf-{RUN_ID}"
    # The earlier try's TrainJob has failed; the one created in its place completes.
    cluster = kube(trainjobs={name: {"metadata": {"name": name}, "spec": {}}}, trainjob_statuses=FAILED[-1:])
    create = cluster._create_trainjob

    def create_then_complete(body):
        if body["metadata"]["name"] not in cluster.trainjobs:
            cluster.trainjob_statuses = COMPLETE[-1:]
        return create(body)

    cluster._create_trainjob = create_then_complete
    train_task(tmp_path)
    assert [body["metadata"]["name"] for body in cluster.created] == [name]
    assert cluster.deleted == [name, name], "the failed one, then the new one when it completed"


@pytest.mark.parametrize("cluster, said", [
    ({"trainer_installed": False}, "serves no TrainJob API (trainer.kubeflow.org/v1alpha1): install Kubeflow Trainer"),
    ({"forbidden": {"trainjobs"}}, "HTTP 403: trainjobs is forbidden: User \"system:serviceaccount:kubeflow:tester\""),
])
def test_a_cluster_that_cannot_take_the_trainjob_says_why_in_one_line(tmp_path, kube, capsys, cluster, said):
    kube(**cluster)
    with pytest.raises(SystemExit):
        train_task(tmp_path)
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmclf: error:")]
    assert f"creating TrainJob mmclf-{RUN_ID} in namespace kubeflow" in line and said in line


def test_a_stopped_train_task_deletes_its_trainjob(tmp_path, kube):
    cluster = kube(trainjob_statuses=RUNNING)  # never finishes
    before = signal.getsignal(signal.SIGTERM)
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()  # KFP terminating the run
    with pytest.raises(Stopped):
        train_task(tmp_path)
    assert cluster.deleted == [f"mmclf-{RUN_ID}"]
    assert signal.getsignal(signal.SIGTERM) is before, "the handler is the task's only while it waits"


def test_a_real_uuid_makes_a_valid_name():
    for _ in range(20):
        name = trainjob_name(str(uuid.uuid4()))
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63


# --- the preflight (backend.mode=check) -----------------------------------------------------------


def trainjob_cluster(**changes) -> dict:
    """An NFS default class and two nodes of 4 GPUs each: where TRAINJOB runs."""
    gpu_nodes = [node(f"gpu-{i}", {"cpu": "32", "nvidia.com/gpu": "4"}) for i in (1, 2)]
    return {"storage_classes": [storage_class("nfs-client", NFS, default=True)], "nodes": gpu_nodes, **changes}


def preflight(tmp_path, capsys, *overrides) -> tuple[list[str], Exception]:
    """The preflight's lines, and how it failed (None: it passed)."""
    cfg = compose_cfg(["backend=kfp", "data=synthetic", *TRAINJOB, "backend.mode=check", *overrides])
    try:
        KfpBackend().run(cfg, RunDir(tmp_path), JobContext())
        failed = None
    except PreflightFailed as err:
        failed = err
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("preflight: ")], failed


def test_check_asks_for_trainer_the_runtime_the_rights_and_enough_nodes(tmp_path, kube, capsys):
    cluster = kube(**trainjob_cluster())
    lines, failed = preflight(tmp_path, capsys)
    assert failed is None
    lines = "\n".join(lines)
    assert "preflight: ok: Kubeflow Trainer serves TrainJobs; ClusterTrainingRuntime torch-distributed exists" in lines
    assert ("preflight: ok: service account pipeline-runner's rights on trainjobs.trainer.kubeflow.org in namespace "
            "kubeflow: create, get, delete allowed") in lines
    assert "preflight: ok: 2 nodes have 4 nvidia.com/gpu allocatable (the TrainJob's 2 nodes ask for 4 each)" in lines
    assert {review["user"] for review in cluster.access_reviews} == {"system:serviceaccount:kubeflow:pipeline-runner"}
    assert sorted(review["resourceAttributes"]["verb"] for review in cluster.access_reviews) == ["create", "delete",
                                                                                                   "get"]


@pytest.mark.parametrize("cluster, overrides, said", [
    ({"trainer_installed": False}, [], "the cluster serves no TrainJob API (trainer.kubeflow.org/v1alpha1)"),
    ({}, ["backend.trainjob.runtime=torch-nightly"], "ClusterTrainingRuntime torch-nightly does not exist"),
    ({"denied_verbs": {"create", "delete"}}, [], "pipeline-runner's rights on trainjobs.trainer.kubeflow.org in "
                                                 "namespace kubeflow: may not create, delete; give the pipeline's"),
    ({}, ["dist.nnodes=3"], "2 of the 2 schedulable nodes have 4 nvidia.com/gpu allocatable, and the TrainJob's 3"),
])
def test_check_names_what_would_stop_a_trainjob(tmp_path, kube, capsys, cluster, overrides, said):
    kube(**trainjob_cluster(**cluster))
    lines, failed = preflight(tmp_path, capsys, *overrides)
    assert re.match(r"preflight: 1 of \d+ checks", str(failed))
    (problem,) = [line for line in lines if line.startswith("preflight: PROBLEM: ")]
    assert said in problem


def test_rights_the_cluster_will_not_review_are_not_checked(tmp_path, kube, capsys):
    kube(**trainjob_cluster(forbidden={"subjectaccessreviews"}))
    lines, _ = preflight(tmp_path, capsys)
    (line,) = [line for line in lines if "rights on trainjobs" in line]
    assert line.startswith("preflight: not checked: ") and "HTTP 403" in line

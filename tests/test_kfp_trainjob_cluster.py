"""backend=kfp backend.distributed=trainjob against a cluster: the train task's launcher runs for real
against the loopback Kubernetes API of tests/k8s_server.py (the preflight: test_kfp_trainjob_preflight.py).
No Trainer controller: the TrainJob's status changes are the fake's; its nodes train nothing, and node 0's
record is written as the step entry point writes it.
"""
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import types
import uuid

import pytest
from omegaconf import OmegaConf

from backends.kfp.compiling.compile import pod_config_yaml
from backends.kfp.compiling.parameters import apply_parameters
from backends.kfp.pod import run_in_pod
from backends.kfp.trainjob import launcher
from backends.kfp.trainjob.api import condition
from backends.kfp.trainjob.cleanup_task import clean_up_in_pod
from backends.kfp.trainjob.launcher import Stopped
from backends.kfp.trainjob.manifest import trainjob_name
from mmclf.models.config import run_fingerprint
from mmclf.run.rundir import RunDir
from mmclf.steps import record_step
from mmclf.steps.__main__ import load_config
from mmclf.steps.prepare_data import record_config
from tests import test_kfp_cluster
from tests.conftest import compose_cfg
from tests.k8s_objects import event
from tests.k8s_trainer import COMPLETE, FAILED, RUNNING, node_pod, nodes_status, trainjob_condition
from tests.test_kfp_trainjob import RUN_ID, TRAINJOB

kube = test_kfp_cluster.kube  # the fixture: a fake cluster behind $KUBECONFIG, as on a workstation


# --- the launcher against a loopback Kubernetes API ---------------------------------------------


PARAMETERS = dict(learning_rate=0.05, epochs=3, batch_size=16, seed=1)
WAIT = launcher.wait  # the launcher's own, without the fake nodes' record


def run_folder(tmp_path) -> RunDir:
    return RunDir(tmp_path / "runs" / f"job-{RUN_ID}")


@pytest.fixture(autouse=True)
def node_zero_records_train(monkeypatch, tmp_path):
    """The fake's TrainJob trains nothing. What its node 0 leaves when it completes: the train step
    recorded in steps.json by the step entry point, for the config prepare-data recorded."""
    def wait(jobs, name, *args):
        trainjob = WAIT(jobs, name, *args)
        if condition(trainjob, "Complete"):
            cfg = load_config(run_folder(tmp_path))
            record_step("train", cfg, run_folder(tmp_path), seconds=1.0, fingerprint=run_fingerprint(cfg))
        return trainjob

    monkeypatch.setattr(launcher, "wait", wait)


def train_task(tmp_path, *overrides):
    """What the train task's pod does: run_in_pod with the compiled config parameter and the run id,
    after prepare-data recorded the run's config in its folder."""
    cfg = compose_cfg(["backend=kfp", "data=synthetic", *TRAINJOB, "backend.trainjob.poll_interval_s=0.01",
                       *overrides])
    config_yaml = pod_config_yaml(cfg, "/mnt/mmclf/data")
    run_folder(tmp_path).path.mkdir(parents=True, exist_ok=True)
    record_config(apply_parameters(OmegaConf.create(config_yaml), PARAMETERS), run_folder(tmp_path))
    return run_in_pod("train", config_yaml, str(tmp_path / "runs" / "job"), RUN_ID, claim_name="claim-1",
                      **PARAMETERS)


def trainjob_lines(caplog):
    """The launcher's lines about the TrainJob (not node 0's log, node_logs.py)."""
    return [r.getMessage() for r in caplog.records if r.name == "backends.kfp.trainjob.launcher" and
            r.getMessage().startswith("trainjob ")]


def test_the_train_task_creates_the_trainjob_logs_each_change_and_deletes_it_when_complete(tmp_path, kube, caplog):
    caplog.set_level(logging.INFO)
    cluster = kube()
    _, folder = train_task(tmp_path)
    name = f"mmclf-{RUN_ID}"
    (created,) = cluster.created
    assert created["metadata"]["name"] == name and created["metadata"]["namespace"] == "kubeflow"
    assert created["spec"]["trainer"]["command"][-2:] == ["--run-dir", str(folder)]
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



def test_the_trainjob_is_owned_by_the_train_tasks_pod(tmp_path, kube, monkeypatch):
    cluster = kube(trainjob_statuses=RUNNING[:1] + COMPLETE[-1:])
    monkeypatch.setenv("KFP_POD_NAME", "mmclf-run-train-1234")  # what KFP's driver gives every task's container
    monkeypatch.setenv("KFP_POD_UID", "0a1b2c3d-0000-4000-8000-123456789abc")
    train_task(tmp_path)
    (created,) = cluster.created
    owner = {"apiVersion": "v1", "kind": "Pod", "name": "mmclf-run-train-1234",
             "uid": "0a1b2c3d-0000-4000-8000-123456789abc"}
    assert created["metadata"]["ownerReferences"] == [owner], \
        "deleting the KFP run (its pods) deletes the TrainJob, however the task ended"


def test_the_train_task_logs_node_zeros_log_and_trainers_progress(tmp_path, kube, caplog):
    caplog.set_level(logging.INFO)
    name = f"mmclf-{RUN_ID}"
    zero, one = node_pod(name, 0), node_pod(name, 1)
    progress = {"progressPercentage": 50, "estimatedRemainingSeconds": 120,
                "metrics": [{"name": "loss", "value": "0.41"}]}
    statuses = [*COMPLETE[:-1], {**COMPLETE[2], "trainerStatus": progress}, COMPLETE[-1]]
    kube(pods=[zero, one], trainjob_statuses=statuses,
         pod_logs={zero["metadata"]["name"]: "epoch 1: loss 0.8\nepoch 2: loss 0.41\n",
                   one["metadata"]["name"]: "rank 4's lines"})
    train_task(tmp_path)
    said = [record.getMessage() for record in caplog.records]
    assert [line for line in said if line.startswith("node 0: ")] == ["node 0: epoch 1: loss 0.8",
                                                                      "node 0: epoch 2: loss 0.41"]
    assert not any("rank 4's lines" in line for line in said), "node 0 only: the other nodes log the same steps"
    assert any(line.endswith("trainer: 50% done, about 120 s left, loss 0.41") for line in said)


def test_node_zeros_log_unreadable_is_one_warning_not_a_failure(tmp_path, kube, caplog):
    kube(pods=[node_pod(f"mmclf-{RUN_ID}", 0)], forbidden={"pods"})
    train_task(tmp_path)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "node 0's log cannot be followed here (403)" in warning and "kubectl logs -n kubeflow -l " in warning


def test_a_retried_task_whose_training_is_recorded_done_creates_no_trainjob(tmp_path, kube, monkeypatch):
    cluster = kube()
    train_task(tmp_path)
    # The nodes left the final checkpoint (run_step trusts a record only then); the fake trains nothing.
    monkeypatch.setitem(sys.modules, "mmclf.steps.train", types.SimpleNamespace(outputs_intact=lambda *_: True))
    train_task(tmp_path)
    assert len(cluster.created) == 1


def test_a_trainjob_that_completes_without_node_zeros_record_fails_the_task_in_one_line(tmp_path, kube, monkeypatch,
                                                                                       capsys):
    kube()
    monkeypatch.setattr(launcher, "wait", WAIT)  # node 0 ran some other command, or another config
    with pytest.raises(SystemExit) as ended:
        train_task(tmp_path)
    assert ended.value.code == 1, "a failure: the work started"
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmclf: error:")]
    assert line.endswith(f"the TrainJob completed, but {run_folder(tmp_path).steps_record} records no finished train "
                         "step for this run's config: node 0 did not record it (its log says why)")


def test_on_trainer_v2_1_the_task_creates_the_trainjob_with_pod_template_overrides(tmp_path, kube, caplog):
    cluster = kube(trainer_version="v2.1")  # what the Kubeflow platform releases ship
    train_task(tmp_path, "backend.timeout_s=3600")
    (created,) = cluster.created  # the v2.2+ manifest was refused by strict decoding, not created
    spec = created["spec"]
    assert "runtimePatches" not in spec and "activeDeadlineSeconds" not in spec
    (override,) = spec["podTemplateOverrides"]
    assert override["targetJobs"] == [{"name": "node"}]
    assert override["spec"]["volumes"][0] == {"name": "mmclf-volume", "persistentVolumeClaim": {"claimName": "claim-1"}}
    assert override["spec"]["containers"] == [{"name": "node", "volumeMounts": [
        {"name": "mmclf-volume", "mountPath": "/mnt/mmclf"}, {"name": "dshm", "mountPath": "/dev/shm"}]}]
    assert override["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert "no runtimePatches (v2.1): creating it with podTemplateOverrides" in caplog.text
    assert cluster.deleted == [f"mmclf-{RUN_ID}"], "it completed, and was cleaned up as on v2.3"


def test_a_field_the_served_trainjob_lacks_is_one_line_naming_it(tmp_path, kube, monkeypatch, capsys):
    cluster = kube()
    manifest = launcher.trainjob_manifest

    def with_a_field_trainer_lacks(*args, **kwargs):
        body = manifest(*args, **kwargs)
        body["spec"]["trainer"]["imagePullPolicy"] = "Always"  # what one might wish for: no such field
        return body

    monkeypatch.setattr(launcher, "trainjob_manifest", with_a_field_trainer_lacks)
    with pytest.raises(SystemExit):
        train_task(tmp_path)
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmclf: error:")]
    assert 'HTTP 400: TrainJob in version "v1alpha1" cannot be handled as a TrainJob: strict decoding error: ' \
           'unknown field "spec.trainer.imagePullPolicy"' in line
    assert cluster.created == [], "refused whole: never created without the field"


NOT_SCHEDULED = [{}, {"jobsStatus": [nodes_status(active=2)]}]  # pods created, none ever ready


@pytest.mark.parametrize("statuses, events, said", [
    (NOT_SCHEDULED, [
        event("a", "Job", f"mmclf-{RUN_ID}-node-0", "FailedCreate", 'Error creating: pods "x" is forbidden: exceeded '
              "quota: gpus, requested: requests.nvidia.com/gpu=4, used: requests.nvidia.com/gpu=4, limited: "
              "requests.nvidia.com/gpu=4", when="2026-01-05T10:00:01Z"),
        event("b", "Pod", f"mmclf-{RUN_ID}-node-0-1-abcde", "FailedScheduling", "0/2 nodes are available: 2 "
              "Insufficient nvidia.com/gpu.", when="2026-01-05T10:00:02Z"),
        event("c", "Pod", "someone-elses-pod", "FailedScheduling", "not ours"),
        event("d", "Pod", f"mmclf-{RUN_ID}-node-0-0-fghij", "Scheduled", "assigned", type_="Normal")],
     f"Pod mmclf-{RUN_ID}-node-0-1-abcde: FailedScheduling: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu.; "
     f'Job mmclf-{RUN_ID}-node-0: FailedCreate: Error creating: pods "x" is forbidden: exceeded quota: gpus'),
    ([{"conditions": [trainjob_condition("Suspended", "Suspended", "TrainJob is suspended")]}], [],
     "Suspended (Suspended: TrainJob is suspended)"),
    (NOT_SCHEDULED, [], "the cluster gave no reason (no Warning events)"),
])
def test_a_trainjob_whose_nodes_never_run_fails_in_one_line_quoting_the_cluster(tmp_path, kube, capsys, statuses,
                                                                                events, said):
    cluster = kube(trainjob_statuses=statuses, events=events)
    with pytest.raises(SystemExit) as ended:
        train_task(tmp_path, "backend.trainjob.start_timeout_s=0.2")
    assert ended.value.code == 1
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmclf: error:")]
    assert f"no node pod of TrainJob mmclf-{RUN_ID} in namespace kubeflow ran within 0.2 s " \
           "(backend.trainjob.start_timeout_s): " in line and said in line and "not ours" not in line
    assert cluster.deleted == [f"mmclf-{RUN_ID}"], "nothing ran: no logs to keep, only pods holding a queue"


def test_a_task_whose_account_may_not_clean_up_creates_no_trainjob(tmp_path, kube, capsys):
    cluster = kube(denied_verbs={"delete"})  # a Role with create and get only
    with pytest.raises(SystemExit) as ended:
        train_task(tmp_path)
    assert ended.value.code == 2, "a refusal: nothing was done"
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmclf: error:")]
    assert "this pod's service account may not delete trainjobs.trainer.kubeflow.org in namespace kubeflow (a " \
           "SelfSubjectAccessReview says so); give the pipeline's service account create, get and delete" in line
    assert cluster.created == [] and [r["resourceAttributes"]["verb"] for r in cluster.self_reviews] == [
        "create", "get", "delete"], "asked as the pod itself, before creating anything"


@pytest.mark.parametrize("overrides, deleted", [([], True), (["backend.keep_trainjob=true"], False)])
def test_the_clean_up_task_deletes_the_runs_trainjob_however_the_run_ended(tmp_path, kube, overrides, deleted):
    name = f"mmclf-{RUN_ID}"
    cluster = kube(trainjobs={name: {"metadata": {"name": name}, "spec": {}}}, trainjob_statuses=FAILED[-1:])
    cfg = compose_cfg(["backend=kfp", "data=synthetic", *TRAINJOB, *overrides])
    clean_up_in_pod(pod_config_yaml(cfg, "/mnt/mmclf/data"), RUN_ID)
    assert cluster.deleted == ([name] if deleted else [])
    clean_up_in_pod(pod_config_yaml(cfg, "/mnt/mmclf/data"), RUN_ID)  # already gone: fine, nothing raised
    assert cluster.deleted == ([name] if deleted else [])


def test_keep_trainjob_keeps_a_completed_trainjob(tmp_path, kube):
    cluster = kube()
    train_task(tmp_path, "backend.keep_trainjob=true")
    assert cluster.deleted == [] and list(cluster.trainjobs) == [f"mmclf-{RUN_ID}"]


def test_a_failed_trainjob_ends_the_task_in_one_line_and_is_kept_for_its_logs(tmp_path, kube, capsys):
    cluster = kube(trainjob_statuses=FAILED)
    with pytest.raises(SystemExit) as ended:
        train_task(tmp_path)
    assert ended.value.code == 1, "a failure: the work started"
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

    def create_then_complete(body, query):
        if body["metadata"]["name"] not in cluster.trainjobs:
            cluster.trainjob_statuses = COMPLETE[-1:]
        return create(body, query)

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


def terminate_once_handled(before, timeout=60):
    """KFP terminating the run: SIGTERM to this process as soon as the task handles it. Sent before,
    its default action would end the test process itself."""
    deadline = time.monotonic() + timeout
    while signal.getsignal(signal.SIGTERM) is before and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)


def test_a_stopped_train_task_deletes_its_trainjob(tmp_path, kube):
    cluster = kube(trainjob_statuses=RUNNING)  # never finishes
    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=terminate_once_handled, args=(before,), daemon=True).start()
    with pytest.raises(Stopped):
        train_task(tmp_path)
    assert cluster.deleted == [f"mmclf-{RUN_ID}"]
    assert signal.getsignal(signal.SIGTERM) is before, "the handler is the task's only while it waits"


def test_a_real_uuid_makes_a_valid_name():
    for _ in range(20):
        name = trainjob_name(str(uuid.uuid4()))
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63

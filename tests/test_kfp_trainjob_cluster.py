"""backend=kfp backend.distributed=trainjob against a cluster: the train task's launcher runs a TrainJob
for real against the loopback Kubernetes API of tests/k8s_server.py (the preflight:
test_kfp_trainjob_preflight.py; how a TrainJob ends, fails or is retried: test_kfp_trainjob_endings.py).
No Trainer controller: the TrainJob's status changes are the fake's; its nodes train nothing, and node 0's
record is written as the step entry point writes it (tests/trainjob_task.py).
"""
import json
import logging
import re
import sys
import types
import uuid

import pytest

from backends.kfp.trainjob import launcher
from backends.kfp.trainjob.manifest import trainjob_name
from tests import trainjob_task
from tests.k8s_trainer import COMPLETE, RUNNING, node_pod
from tests.test_kfp_trainjob import RUN_ID
from tests.trainjob_task import WAIT, run_folder, train_task

kube = trainjob_task.kube  # the fixtures, here: a fake cluster behind $KUBECONFIG, and node 0's record (autouse)
node_zero_records_train = trainjob_task.node_zero_records_train


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


def test_a_real_uuid_makes_a_valid_name():
    for _ in range(20):
        name = trainjob_name(str(uuid.uuid4()))
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63

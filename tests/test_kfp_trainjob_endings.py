"""How a train task's TrainJob ends, against the loopback Kubernetes API of tests/k8s_server.py: nodes
that never run, a failed TrainJob, retried tasks, a stopped task, the clean-up task and keep_trainjob,
clusters that cannot take a TrainJob or may not delete one. Its run: test_kfp_trainjob_cluster.py.
"""
import os
import signal
import threading
import time

import pytest

from backends.kfp.compiling.compile import pod_config_yaml
from backends.kfp.trainjob.cleanup_task import clean_up_in_pod
from backends.kfp.trainjob.launcher import Stopped
from tests import trainjob_task
from tests.conftest import compose_cfg
from tests.k8s_objects import event
from tests.k8s_trainer import COMPLETE, FAILED, RUNNING, nodes_status, trainjob_condition
from tests.test_kfp_trainjob import RUN_ID, TRAINJOB
from tests.trainjob_task import train_task

kube = trainjob_task.kube  # the fixtures, here: a fake cluster behind $KUBECONFIG, and node 0's record (autouse)
node_zero_records_train = trainjob_task.node_zero_records_train

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

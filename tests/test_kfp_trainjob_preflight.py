"""backend.mode=check with backend.distributed=trainjob against the loopback Kubernetes API
(tests/k8s_server.py): Trainer and its runtime, the run's account's rights, enough nodes, and a
server-side dry run of this run's TrainJob."""
import re

import pytest

from tests import test_kfp_cluster
from tests.k8s_objects import node, storage_class
from tests.test_kfp_trainjob import TRAINJOB

NFS = "cluster.local/nfs-subdir-external-provisioner"
kube = test_kfp_cluster.kube  # the fixture: a fake cluster behind $KUBECONFIG, as on a workstation



def trainjob_cluster(**changes) -> dict:
    """An NFS default class and two nodes of 4 GPUs each: where TRAINJOB runs."""
    gpu_nodes = [node(f"gpu-{i}", {"cpu": "32", "nvidia.com/gpu": "4"}) for i in (1, 2)]
    return {"storage_classes": [storage_class("nfs-client", NFS, default=True)], "nodes": gpu_nodes, **changes}


def preflight(tmp_path, capsys, *overrides):
    return test_kfp_cluster.preflight(tmp_path, capsys, *TRAINJOB, *overrides)


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
    assert ("preflight: ok: a dry run of this run's TrainJob in namespace kubeflow: accepted (strict field "
            "validation, the Trainer webhook)") in lines
    (dry_run,) = cluster.dry_runs
    assert "runtimePatches" in dry_run["spec"] and cluster.created == [], "a dry run creates nothing"


def test_check_on_trainer_v2_1_dry_runs_the_manifest_the_task_falls_back_to(tmp_path, kube, capsys):
    cluster = kube(**trainjob_cluster(trainer_version="v2.1"))
    lines, failed = preflight(tmp_path, capsys)
    assert failed is None, "a warning: the run goes, with what v2.1 cannot set"
    (warning,) = [line for line in lines if line.startswith("preflight: WARNING: ")]
    assert "accepted as Trainer v2.1's (podTemplateOverrides): the node pods' user, security context and " \
           "deadline cannot be set there" in warning
    (dry_run,) = cluster.dry_runs  # the first shape was refused by strict decoding, before any dry run
    assert "podTemplateOverrides" in dry_run["spec"] and cluster.created == []


def test_check_cannot_dry_run_what_the_caller_may_not_create(tmp_path, kube, capsys):
    kube(**trainjob_cluster(forbidden={"trainjobs"}))
    lines, failed = preflight(tmp_path, capsys)
    assert failed is None
    assert any(line.startswith("preflight: not checked: a dry run of this run's TrainJob in namespace kubeflow: you "
                               "may not create TrainJobs here") for line in lines)


@pytest.mark.parametrize("cluster, overrides, said", [
    ({"trainer_installed": False}, [], "the cluster serves no TrainJob API (trainer.kubeflow.org/v1alpha1)"),
    ({}, ["backend.trainjob.runtime=torch-nightly"], "ClusterTrainingRuntime torch-nightly does not exist"),
    ({"denied_verbs": {"create", "delete"}}, [], "pipeline-runner's rights on trainjobs.trainer.kubeflow.org in "
                                                 "namespace kubeflow: may not create, delete; give the pipeline's"),
    ({}, ["dist.nnodes=3"], "2 of the 2 schedulable nodes have 4 nvidia.com/gpu allocatable, and the TrainJob's 3"),
    # The nodes mount the claim at once: ReadWriteMany, which a node-local class cannot make.
    ({"storage_classes": [storage_class("local-path", "rancher.io/local-path", default=True)]}, [],
     "provisioner rancher.io/local-path, cannot make ReadWriteMany volumes"),
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

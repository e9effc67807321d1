"""backend.mode=clean against the loopback Kubernetes API: the claims and TrainJobs mmclf runs left in a
namespace, listed with their age and use, and the old unused ones deleted only when asked."""
import datetime

import pytest

from mmclf.errors import ConfigError
from tests import test_kfp_cluster
from tests.k8s_objects import claim
from tests.k8s_trainer import node_pod, trainjob_condition
from tests.test_kfp_cluster import healthy, run_backend

kube = test_kfp_cluster.kube  # the fixture: a fake cluster behind $KUBECONFIG


def days_ago(days: float) -> str:
    when = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def trainjob(name: str, days: float, ended: bool) -> dict:
    status = {"conditions": [trainjob_condition("Failed", "FailedJobs", "node-1 failed")]} if ended else {}
    labels = {"app.kubernetes.io/name": "mmclf"}
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "status": status,
            "metadata": {"name": name, "creationTimestamp": days_ago(days), "labels": labels}}


def leftovers() -> dict:
    """Claims old and unused, old but mounted by a running pod, young; someone else's; the TrainJobs."""
    user = node_pod("mmclf-busy", 0)
    user["spec"]["volumes"] = [{"name": "v", "persistentVolumeClaim": {"claimName": "b2-mmclf"}}]
    return {"claims": [claim("a1-mmclf", "Bound", ["ReadWriteOnce"], created=days_ago(30)),
                       claim("b2-mmclf", "Bound", ["ReadWriteOnce"], created=days_ago(30)),
                       claim("c3-mmclf", "Bound", ["ReadWriteOnce"], created=days_ago(1)),
                       claim("someone-elses-data", "Bound", ["ReadWriteOnce"], created=days_ago(90))],
            "pods": [user],
            "trainjobs": {"mmclf-old": trainjob("mmclf-old", 20, ended=True),
                          "mmclf-going": trainjob("mmclf-going", 20, ended=False)}}


def clean_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("clean: ")]


def test_clean_lists_what_runs_left_and_deletes_nothing_unless_asked(tmp_path, kube, capsys):
    cluster = kube(**healthy(**leftovers()))
    assert run_backend(tmp_path, "backend.mode=clean") is None
    lines = clean_lines(capsys)
    assert len(lines) == 5 + 1 and not any("someone-elses-data" in line for line in lines), "only mmclf's, a summary"
    text = "\n".join(lines)
    assert "clean: claim a1-mmclf in namespace kubeflow: 30.0 days old, older than 7 days" in text
    assert "clean: claim b2-mmclf in namespace kubeflow: 30.0 days old, mounted by mmclf-busy-node-0-0-abcde" in text
    assert "clean: claim c3-mmclf in namespace kubeflow: 1.0 days old, younger than 7 days" in text
    assert "clean: TrainJob mmclf-going in namespace kubeflow: 20.0 days old, still going" in text
    assert lines[-1] == "clean: 5 left by mmclf runs, 2 older than 7 days and unused (backend.clean.delete=true " \
                        "deletes them)"
    assert cluster.deleted_claims == [] and cluster.deleted == [] and not (tmp_path / "job.json").exists()


def test_clean_with_delete_removes_only_the_old_unused_ones(tmp_path, kube, capsys):
    cluster = kube(**healthy(**leftovers()))
    run_backend(tmp_path, "backend.mode=clean", "backend.clean.delete=true")
    assert cluster.deleted_claims == ["a1-mmclf"] and cluster.deleted == ["mmclf-old"]
    assert sum(line.endswith(": deleting it") for line in clean_lines(capsys)) == 2


def test_clean_needs_cluster_access(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match=r"^backend\.mode=clean asks the cluster and finds no access"):
        run_backend(tmp_path, "backend.mode=clean")

"""backend=kfp asking the cluster: the default StorageClass when compiling, the preflight (mode=check),
and submit's preflight, against a loopback fake of the Kubernetes API (tests/k8s_server.py).

The real ``kubernetes`` client talks to it, through a kubeconfig file as on a workstation.
"""
import subprocess
import sys
from typing import Optional

import kfp
import pytest
import yaml

from backends.kfp.backend import KfpBackend
from backends.kfp.preflight import PreflightFailed
from mmclf.errors import ConfigError
from mmclf.reports.jobs import JobContext
from mmclf.run.rundir import RunDir
from mmclf.task import run
from tests.conftest import REPO, closed_port_url, compose_cfg
from tests.k8s_objects import claim, namespace, node, secret, storage_class
from tests.k8s_server import FakeKubernetes, write_kubeconfig
from tests.kfp_server import FakeKfpServer

NFS = "cluster.local/nfs-subdir-external-provisioner"
GPU_NODE = node("gpu-1", {"cpu": "16", "nvidia.com/gpu": "2"}, labels={"pool": "gpu"})
CPU_NODE = node("cpu-1", {"cpu": "8"})


@pytest.fixture
def kube(tmp_path, monkeypatch):
    """Start a fake cluster holding the given objects and point $KUBECONFIG at it."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config, no kfp context of the user's
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp_context.json"))
    for name in ("KUBERNETES_SERVICE_HOST", "KF_PIPELINES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    servers = []

    def start(**objects) -> FakeKubernetes:
        fake = FakeKubernetes(**objects).__enter__()
        servers.append(fake)
        monkeypatch.setenv("KUBECONFIG", fake.write_kubeconfig(tmp_path / "kubeconfig"))
        return fake

    yield start
    for fake in servers:
        fake.__exit__(None, None, None)


def healthy(**changes) -> dict:
    """A cluster where the default config runs: an NFS default class, a GPU node, the kubeflow namespace."""
    return {"storage_classes": [storage_class("nfs-client", NFS, default=True)], "nodes": [CPU_NODE, GPU_NODE],
            **changes}


def run_backend(run_dir, *overrides):
    cfg = compose_cfg(["backend=kfp", "data=synthetic", *overrides])
    return KfpBackend().run(cfg, RunDir(run_dir), JobContext())


def preflight(tmp_path, capsys, *overrides) -> tuple[list[str], Optional[Exception]]:
    """backend.mode=check with ``overrides``: its ``preflight:`` lines, and how it failed (None: it passed)."""
    try:
        run_backend(tmp_path, "backend.mode=check", *overrides)
        failed = None
    except PreflightFailed as err:
        failed = err
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("preflight: ")], failed


def compiled_class(run_dir):
    spec = next(yaml.safe_load_all((run_dir / "pipeline.yaml").read_text()))
    return spec["root"]["dag"]["tasks"]["createpvc"]["inputs"]["parameters"]["storage_class_name"]


@pytest.mark.parametrize("classes, expected", [
    ([storage_class("standard", "rancher.io/local-path"), storage_class("nfs-client", NFS, default=True)],
     "nfs-client"),
    # Several defaults: Kubernetes takes the newest, then the first by name.
    ([storage_class("old", NFS, default=True, created="2025-01-01T00:00:00Z"),
      storage_class("new", NFS, default=True, created="2026-03-01T00:00:00Z")], "new"),
    ([storage_class("b", NFS, default=True), storage_class("a", NFS, default=True)], "a"),
])
def test_compiling_with_a_kubeconfig_names_the_clusters_default_class(tmp_path, kube, capsys, classes, expected):
    cluster = kube(storage_classes=classes)
    run_backend(tmp_path)
    assert compiled_class(tmp_path) == {"runtimeValue": {"constant": expected}}
    assert f"storage class: {expected}, the default class of kube context fake-cluster" in capsys.readouterr().out
    assert cluster.requests == [("GET", "/apis/storage.k8s.io/v1/storageclasses")], "one question, nothing more"


def test_the_beta_annotation_marks_a_default_and_only_true_counts(tmp_path, kube):
    beta = storage_class("beta", NFS)
    beta["metadata"]["annotations"] = {"storageclass.beta.kubernetes.io/is-default-class": "true"}
    almost = storage_class("almost", NFS, created="2027-01-01T00:00:00Z")
    almost["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "True"}
    kube(storage_classes=[beta, almost])
    run_backend(tmp_path)
    assert compiled_class(tmp_path) == {"runtimeValue": {"constant": "beta"}}


@pytest.mark.parametrize("cluster, said", [
    ({"storage_classes": [storage_class("nfs-client", NFS)]}, "has no default class"),
    ({"forbidden": {"storageclasses"}}, "HTTP 403"),
])
def test_without_a_default_class_the_class_is_left_to_the_upload(tmp_path, kube, capsys, cluster, said):
    kube(**cluster)
    run_backend(tmp_path)
    assert compiled_class(tmp_path) == {"componentInputParameter": "storage_class"}
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("storage class:")]
    assert said in line and "parameter storage_class" in line


def test_a_dead_cluster_does_not_stop_compiling(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    dead = closed_port_url()
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path / "kubeconfig", dead, "token"))
    run_backend(tmp_path)
    assert compiled_class(tmp_path) == {"componentInputParameter": "storage_class"}
    assert f"cannot reach the cluster (kube context fake-cluster) at {dead}" in capsys.readouterr().out


def test_an_unknown_kube_context_is_a_config_error(tmp_path, kube):
    kube(**healthy())
    with pytest.raises(ConfigError, match=r"backend\.kube_context=elsewhere: .*kubectl config get-contexts"):
        run_backend(tmp_path, "backend.kube_context=elsewhere")
    assert not (tmp_path / "pipeline.yaml").exists()


def test_check_passes_on_a_healthy_cluster_and_asks_the_kfp_api(tmp_path, kube, capsys):
    kube(**healthy(secrets=[secret("regcred")]))
    with FakeKfpServer() as kfp_server:
        assert run_backend(tmp_path, "backend.mode=check", f"backend.host={kfp_server.url}",
                           "backend.image_pull_secrets=[regcred]", "+backend.node_selector={pool: gpu}") is None
        assert kfp_server.requests_to("GET", "/apis/v2beta1/healthz")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[1] for line in lines if line.startswith("preflight: ")][:5] == ["ok"] * 5
    text = "\n".join(lines)
    for said in ["namespace kubeflow exists", "storage class nfs-client (the default)",
                 "node gpu-1 has 2 nvidia.com/gpu", "image pull secret regcred in namespace kubeflow exists",
                 f"KFP API at {kfp_server.url} answers (KFP 2.17.0, single-user)",
                 "nothing found that would make a run stall"]:
        assert said in text
    assert "WARNING" not in text, "KFP 2.17 honours the pods' security context"
    assert not (tmp_path / "pipeline.yaml").exists(), "a check compiles nothing"


@pytest.mark.parametrize("overrides, warned", [([], True), (["backend.volume.make_writable=false"], False)])
def test_check_warns_that_kfp_before_2_16_ignores_the_pods_security_context(tmp_path, kube, capsys, overrides,
                                                                             warned):
    kube(**healthy())
    with FakeKfpServer(tag_name="2.15.0") as kfp_server:  # what Kubeflow 1.11 ships
        assert run_backend(tmp_path, "backend.mode=check", f"backend.host={kfp_server.url}", *overrides) is None
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("preflight: WARNING: ")]
    assert bool(warnings) == warned, "a warning, not a problem: the run can go with a volume uid 1000 can write"
    if warned:
        (line,) = warnings
        assert "KFP 2.15.0 ignores the pods' security context (KFP honours it from 2.16)" in line
        assert "backend.volume.make_writable=false" in line


@pytest.mark.parametrize("cluster, overrides, said", [
    ({"namespaces": [namespace("team-a")]}, [], "namespace kubeflow does not exist: set backend.namespace"),
    ({"storage_classes": [storage_class("local-path", "rancher.io/local-path", default=True)]},
     ["backend.volume.access_modes=[ReadWriteMany]"], "provisioner rancher.io/local-path, cannot make ReadWriteMany"),
    ({}, ["backend.volume.storage_class=fast"], "storage class fast does not exist"),
    ({"storage_classes": []}, [], "the cluster has no default storage class"),
    ({}, ["backend.volume.mode=existing", "backend.volume.claim_name=data"], "claim data in namespace kubeflow does"),
    ({"claims": [claim("data", "Bound", ["ReadWriteOnce"])]},
     ["backend.volume.mode=existing", "backend.volume.claim_name=data", "backend.volume.access_modes=[ReadWriteMany]"],
     "has access modes ['ReadWriteOnce']"),
    ({"claims": [claim("data", "Pending", ["ReadWriteMany"])],
      "storage_classes": [storage_class("nfs-client", NFS, binding_mode="Immediate")]},
     ["backend.volume.mode=existing", "backend.volume.claim_name=data"], "is Pending, not Bound"),
    ({"nodes": [CPU_NODE]}, [], "no node of the 1 schedulable nodes has 1 nvidia.com/gpu allocatable (at most 0)"),
    ({}, ["backend.resources.accelerator_count=4"], "has 4 nvidia.com/gpu allocatable (at most 2)"),
    ({}, ["+backend.node_selector={pool: a100}"], "matching backend.node_selector"),
    ({"nodes": [node("gpu-1", {"nvidia.com/gpu": "2"}, unschedulable=True)]}, [], "of the 0 schedulable nodes"),
    ({}, ["backend.image_pull_secrets=[regcred]"], "image pull secret regcred in namespace kubeflow does not exist"),
    ({"secrets": [secret("regcred", "Opaque")]}, ["backend.image_pull_secrets=[regcred]"], "not a registry credential"),
    ({"namespaces": [namespace("kubeflow", {"pod-security.kubernetes.io/enforce": "restricted"})]}, [],
     "backend.volume.make_writable=false"),
    ({}, [f"backend.host={closed_port_url()}"], "KFP API: cannot reach the KFP API"),
])
def test_check_names_what_would_make_a_run_stall_and_fails(tmp_path, kube, capsys, cluster, overrides, said):
    kube(**healthy(**cluster))
    with pytest.raises(PreflightFailed, match=r"preflight: 1 of \d checks found what would make a run stall"):
        run_backend(tmp_path, "backend.mode=check", *overrides)
    (problem,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("preflight: PROBLEM: ")]
    assert said in problem


@pytest.mark.parametrize("cluster, overrides", [
    ({"claims": [claim("data", "Pending", ["ReadWriteMany"])]},  # nfs-client binds when the first pod mounts it
     ["backend.volume.mode=existing", "backend.volume.claim_name=data"]),
    # Pods of a pod-per-step pipeline mount the volume one at a time: any claim, any class will do.
    ({"claims": [claim("data", "Bound", ["ReadWriteOnce"])]},
     ["backend.volume.mode=existing", "backend.volume.claim_name=data"]),
    ({"storage_classes": [storage_class("local-path", "rancher.io/local-path", default=True)]}, []),
    ({"nodes": [CPU_NODE]}, ["backend.resources.accelerator_count=0"]),
    ({"namespaces": [namespace("kubeflow", {"pod-security.kubernetes.io/enforce": "restricted"})]},
     ["backend.volume.make_writable=false"]),
])
def test_check_passes_what_a_run_can_live_with(tmp_path, kube, cluster, overrides):
    kube(**healthy(**cluster))
    assert run_backend(tmp_path, "backend.mode=check", *overrides) is None


def test_a_check_leaves_no_job_record(tmp_path, kube):
    kube(**healthy())
    assert run(compose_cfg(["backend=kfp", "data=synthetic", "backend.mode=check"]), tmp_path / "run") is None
    assert not (tmp_path / "run/job.json").exists(), "a preflight ran nothing: no record to mistake for a run"


def test_what_the_cluster_will_not_say_is_not_checked_and_no_problem(tmp_path, kube, capsys):
    kube(**healthy(forbidden={"namespaces", "nodes", "secrets"}))
    run_backend(tmp_path, "backend.mode=check", "backend.image_pull_secrets=[regcred]")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("preflight: not checked: ")]
    assert len(lines) == 4 and all("HTTP 403" in line for line in lines[:3])  # and the KFP API: no host given


def test_submit_runs_the_preflight_first_and_submits_nothing_on_a_problem(tmp_path, kube):
    kube(**healthy(nodes=[CPU_NODE]))
    with FakeKfpServer() as kfp_server, pytest.raises(PreflightFailed, match="nothing was compiled or submitted"):
        run_backend(tmp_path, "backend.mode=submit", f"backend.host={kfp_server.url}")
    assert [(r.method, r.path) for r in kfp_server.requests] == [("GET", "/apis/v2beta1/healthz")], \
        "asked only whether KFP is multi-user: nothing submitted"
    assert not (tmp_path / "pipeline.yaml").exists()


def test_submit_on_a_healthy_cluster_compiles_the_default_class_and_names_the_runs_folder(tmp_path, kube):
    kube(**healthy())
    with FakeKfpServer() as kfp_server:
        run_backend(tmp_path, "backend.mode=submit", f"backend.host={kfp_server.url}")
    [run_id] = kfp_server.runs
    assert compiled_class(tmp_path) == {"runtimeValue": {"constant": "nfs-client"}}
    record = yaml.safe_load((tmp_path / "kfp_run.json").read_text())
    assert record["run_dir"].startswith("/mnt/mmclf/runs/mmclf-resnet18-synthetic-")
    assert record["run_dir"].endswith(f"-{run_id}")


def test_check_from_the_command_line_exits_non_zero_with_a_line_each(tmp_path, kube):
    kube(**healthy(nodes=[CPU_NODE]))
    command = [sys.executable, "-m", "mmclf", "backend=kfp", "backend.mode=check", f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "preflight: PROBLEM: no node" in result.stdout and "preflight: ok: namespace kubeflow" in result.stdout
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("mmclf: error:")]
    assert "1 of 4 checks" in error and "Traceback" not in result.stderr

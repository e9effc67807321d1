"""A Kubeflow platform's KFP (multi-user: profiles): healthz says ``multi_user``, and check and submit
take the profile's namespace (the kubeconfig context's, when backend.namespace names none) and account
(default-editor), against the loopback KFP and Kubernetes APIs."""
import pytest

from backends.kfp.backend import KfpBackend
from mmclf.errors import ConfigError
from mmclf.reports.jobs import JobContext
from mmclf.run.rundir import RunDir
from tests import test_kfp_cluster
from tests.conftest import compose_cfg
from tests.k8s_objects import namespace
from tests.kfp_server import FakeKfpServer
from tests.test_kfp_trainjob import TRAINJOB
from tests.test_kfp_trainjob_preflight import trainjob_cluster

kube = test_kfp_cluster.kube  # the fixture: a fake cluster behind $KUBECONFIG


@pytest.fixture
def platform(kube, tmp_path, monkeypatch):
    """A cluster with the profile namespace team-a, a multi-user KFP, and a kubeconfig context naming
    ``context_namespace``; yields (cluster, KFP server)."""
    def start(context_namespace="team-a"):
        cluster = kube(**trainjob_cluster(namespaces=[namespace("kubeflow"), namespace("team-a")],
                                          claims_namespace="team-a"))
        monkeypatch.setenv("KUBECONFIG", cluster.write_kubeconfig(tmp_path / "profile-kubeconfig",
                                                                  namespace=context_namespace))
        return cluster, kfp.__enter__()

    kfp = FakeKfpServer(namespaces={"team-a"})  # multi_user in healthz
    yield start
    kfp.__exit__(None, None, None)


def check(tmp_path, capsys, host, *overrides) -> list[str]:
    return test_kfp_cluster.preflight(tmp_path, capsys, *TRAINJOB, f"backend.host={host}", *overrides)[0]


def test_check_uses_the_profile_namespace_of_the_kubeconfig_context_and_its_account(platform, tmp_path, capsys,
                                                                                   caplog):
    caplog.set_level("INFO")
    cluster, kfp = platform()
    lines = "\n".join(check(tmp_path, capsys, kfp.url))
    assert "preflight: ok: namespace team-a exists" in lines
    assert f"preflight: ok: KFP API at {kfp.url} answers (KFP 2.17.0, multi-user)" in lines
    assert {review["user"] for review in cluster.access_reviews} == {"system:serviceaccount:team-a:default-editor"}
    assert "runs go to namespace team-a, your kubeconfig context's" in caplog.text


@pytest.mark.parametrize("context_namespace, overrides, said", [
    (None, [], "not kubeflow (the default)"),
    ("team-a", ["backend.namespace=kubeflow"], "not kubeflow;"),
])
def test_a_multi_user_kfp_refuses_the_kubeflow_namespace_in_one_line(platform, tmp_path, context_namespace,
                                                                     overrides, said):
    _, kfp = platform(context_namespace)
    cfg = compose_cfg(["backend=kfp", "data=synthetic", "backend.mode=check", f"backend.host={kfp.url}", *overrides])
    with pytest.raises(ConfigError, match=r"^backend\.namespace: this KFP is multi-user") as refused:
        KfpBackend().run(cfg, RunDir(tmp_path), JobContext())
    assert said in str(refused.value) and "kubectl get profiles" in str(refused.value)


def test_an_explicit_account_is_kept_on_a_multi_user_kfp(platform, tmp_path, capsys):
    cluster, kfp = platform()
    check(tmp_path, capsys, kfp.url, "backend.trainjob.service_account=trainer-bot")
    assert {review["user"] for review in cluster.access_reviews} == {"system:serviceaccount:team-a:trainer-bot"}

"""Who every pod mmclf creates or asks for runs as, read from what compile writes: the KFP task pods
(pipeline.yaml's Kubernetes platform spec), the TrainJob's nodes (trainjob.yaml) and the predictor
(inferenceservice.yaml). Each names its user, and wherever it sets runAsNonRoot: true that user is not
root: runAsNonRoot with no runAsUser leaves the choice to the image, and the kubelet refuses to start an
image whose user is root (the stock Triton runtime's is)."""
import copy

import pytest
import yaml

from tests.test_kfp_pipeline import compile_pipeline

pytestmark = pytest.mark.usefixtures("no_cluster_access")  # tests/conftest.py

EVERY_POD = ["backend.distributed=trainjob", "dist.nnodes=2", "backend.serve.enabled=true",
             "backend.volume.storage_class=nfs-client"]


def users(node, inherited=None, where="") -> list[tuple[str, object, bool]]:
    """(where, the effective runAsUser, runAsNonRoot) of every securityContext under ``node``: a
    container's own runAsUser, else its pod's (the nearest securityContext above it)."""
    found = []
    if isinstance(node, dict):
        context = node.get("securityContext")
        if isinstance(context, dict):
            inherited = context.get("runAsUser", inherited)
            found.append((where or ".", inherited, context.get("runAsNonRoot") is True))
        for key, value in node.items():
            if key != "securityContext":
                found += users(value, inherited, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += users(value, inherited, f"{where}[{index}]")
    return found


def non_root_problems(manifest) -> list[str]:
    """Where runAsNonRoot: true has no user of 1 or more to run as (KFP's platform spec writes it as text)."""
    return [f"{where}: runAsNonRoot with runAsUser {user}" for where, user, non_root in users(manifest)
            if non_root and (user is None or int(user) < 1)]


def review_manifest(run_dir, name):
    return yaml.safe_load((run_dir / name).read_text())


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("every-pod")
    _, spec, kubernetes = compile_pipeline(run_dir, *EVERY_POD)
    return run_dir, spec, kubernetes


def test_every_kfp_task_pod_names_its_user(compiled):
    _, spec, kubernetes = compiled
    executors = kubernetes["deploymentSpec"]["executors"]
    # create-volume and delete-volume are argostub/ placeholders that KFP's driver carries out: no pod.
    containers = {label for label, executor in spec["deploymentSpec"]["executors"].items()
                  if not executor["container"]["image"].startswith("argostub/")}
    assert len(containers) == 8, "volume-permissions, the five steps, serve and the exit handler's clean-up"
    named = {label: executors[label]["securityContext"] for label in containers}
    # The volume-permissions task runs as root on purpose (it chowns the volume); every other one as the image's user.
    assert {label: context["runAsUser"] for label, context in named.items()} == {
        label: "0" if label == "exec-volume-permissions" else "1000" for label in containers}
    assert non_root_problems(kubernetes) == []


@pytest.mark.parametrize("name", ["trainjob.yaml", "inferenceservice.yaml"])
def test_the_trainjob_nodes_and_the_predictor_run_as_a_non_root_user(compiled, name):
    manifest = review_manifest(compiled[0], name)
    assert any(non_root for _, _, non_root in users(manifest)), "the manifest asks for runAsNonRoot"
    assert non_root_problems(manifest) == []


def test_the_check_fails_when_the_predictors_user_is_removed(compiled):
    predictor = review_manifest(compiled[0], "inferenceservice.yaml")["spec"]["predictor"]
    without_pod_user = copy.deepcopy(predictor)
    del without_pod_user["securityContext"]["runAsUser"]
    assert non_root_problems(without_pod_user) == [".: runAsNonRoot with runAsUser None"]
    root_model = copy.deepcopy(predictor)
    root_model["model"]["securityContext"]["runAsUser"] = 0
    assert non_root_problems(root_model) == [".model: runAsNonRoot with runAsUser 0"]

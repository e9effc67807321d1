"""The train task of backend.distributed=trainjob as its pod runs it, against the loopback Kubernetes
API of tests/k8s_server.py: shared by test_kfp_trainjob_cluster.py (a TrainJob's run) and
test_kfp_trainjob_endings.py (how one ends). Import ``kube`` and ``node_zero_records_train`` (autouse)
into a test module for them to apply there."""
import pytest
from omegaconf import OmegaConf

from backends.kfp.compiling.compile import pod_config_yaml
from backends.kfp.compiling.parameters import apply_parameters
from backends.kfp.pod import run_in_pod
from backends.kfp.trainjob import launcher
from backends.kfp.trainjob.api import condition
from mmclf.models.config import run_fingerprint
from mmclf.run.rundir import RunDir
from mmclf.steps import record_step
from mmclf.steps.__main__ import load_config
from mmclf.steps.prepare_data import record_config
from tests import test_kfp_cluster
from tests.conftest import compose_cfg
from tests.test_kfp_trainjob import RUN_ID, TRAINJOB

kube = test_kfp_cluster.kube  # the fixture: a fake cluster behind $KUBECONFIG, as on a workstation

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

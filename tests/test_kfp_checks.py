"""backend=kfp: values, paths, hosts and modes a cluster would refuse, refused here in one line before
anything is compiled or created (the pipeline's shape is in test_kfp_pipeline.py)."""
import pytest
import torch
from omegaconf import OmegaConf

from backends.kfp.backend import KfpBackend
from backends.kfp.submitting.endpoint import host_from_config
from mmclf.errors import ConfigError
from mmclf.reports.jobs import JobContext
from mmclf.run.rundir import RunDir
from tests.conftest import compose_cfg
from tests.test_kfp_pipeline import compile_pipeline

pytestmark = pytest.mark.usefixtures("no_cluster_access")  # tests/conftest.py


def test_a_config_too_large_for_a_kfp_parameter_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="10,000"):
        compile_pipeline(tmp_path, f"+data.notes={'x' * 10_000}")
    assert list(tmp_path.iterdir()) == [], "nothing is written"


@pytest.mark.parametrize("override, key", [
    ("backend.volume.size=20GB", "backend.volume.size"),
    ("backend.volume.size=0Gi", "backend.volume.size"),
    ("backend.volume.access_modes=[]", "backend.volume.access_modes"),
    ("backend.volume.access_modes=[ReadWriteSometimes]", "backend.volume.access_modes"),
    ("backend.volume.mount_path=mnt", "backend.volume.mount_path"),
    ("backend.volume.pvc_name_suffix=_Claim", "backend.volume.pvc_name_suffix"),
    ("backend.volume.pvc_name_suffix=-mmclf-", "backend.volume.pvc_name_suffix"),
    (f"backend.volume.pvc_name_suffix=-{'x' * 27}", "backend.volume.pvc_name_suffix"),
    ("backend.volume.mode=existing", "backend.volume.claim_name"),
    ("backend.resources.accelerator_count=-1", "backend.resources.accelerator_count"),
    ("backend.resources.accelerator_type=null", "backend.resources.accelerator_type"),
    ("backend.resources.cpu=four", "backend.resources.cpu"),
    ("backend.resources.memory=16GB", "backend.resources.memory"),
    ("backend.retries=-1", "backend.retries"),
    ("backend.timeout_s=0", "backend.timeout_s"),
    ("backend.max_in_flight=0", "backend.max_in_flight"),
    ("backend.run_as_user=-1", "backend.run_as_user"),
    ("backend.run_as_user=0", "backend.run_as_user"),  # runAsNonRoot: the kubelet would refuse root
    ("backend.run_as_group=-1", "backend.run_as_group"),
    ("+backend.node_selector={Example.com/gpu: x}", "backend.node_selector"),
    ("+backend.node_selector={pool: 'not a value'}", "backend.node_selector"),
    ("+backend.pod_labels={team: '-vision'}", "backend.pod_labels"),
    ("+backend.pod_annotations={a_b/c: x}", "backend.pod_annotations"),
    ("backend.image_pull_secrets=[Reg_Cred]", "backend.image_pull_secrets"),
    ("backend.tolerations=[{operator: Equal, value: x}]", r"backend.tolerations\[0\]"),
    ("backend.tolerations=[{key: gpu, operator: Exists, value: x}]", r"backend.tolerations\[0\]"),
    ("backend.tolerations=[{key: gpu, tolerationSeconds: 30}]", r"backend.tolerations\[0\]"),
    ("backend.host=ftp://h:1", "backend.host"),
    ("backend.host=http://", "backend.host"),
    ("backend.host=http://kfp:port", "backend.host"),
    ("backend.host='https://kfp.example.com/?x=1'", "backend.host"),
    ("runtime.load_from=/home/me/x.pth", "runtime.load_from"),
    ("runtime.resume_from=work_dir/latest.pth", "runtime.resume_from"),
    ("resume=/home/me/epoch_3.pth", "resume"),
    ("data.train.data_prefix=/home/me/mydata", "data.train.data_prefix"),
    (("logger=mlflow", "logger.mlflow.tracking_uri=/home/me/mlruns"), "logger.mlflow.tracking_uri"),
])
def test_bad_values_fail_in_one_line_before_compiling(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        compile_pipeline(tmp_path, *(override if isinstance(override, tuple) else [override]))
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == [], "nothing is compiled"


@pytest.mark.parametrize("mode", ["compile", "submit"])
def test_paths_on_the_volume_pass_and_local_mode_may_use_this_machines(tmp_path, mode):
    cfg = compose_cfg(["backend=kfp", f"backend.mode={mode}", "data=synthetic", "runtime.load_from=/mnt/mmclf/w.pth",
                       "resume=/mnt/mmclf/runs/old/work_dir/epoch_3.pth", "backend.volume.storage_class=nfs-client",
                       "backend.host=http://localhost:8080"])
    KfpBackend().check(cfg)
    weights = tmp_path / "x.pth"  # mode=local trains here: a path of this machine, checked as backend=local checks it
    torch.save({"state_dict": {}}, weights)
    local = compose_cfg(["backend=kfp", "backend.mode=local", "data=synthetic", f"runtime.load_from={weights}"])
    KfpBackend().check(local)


@pytest.mark.parametrize("host, expected", [
    ("localhost:8080", "https://localhost:8080"),
    ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
    ("https://kubeflow.example.com/pipeline", "https://kubeflow.example.com/pipeline"),
])
def test_hosts_are_read_as_kfp_client_does(host, expected):
    assert host_from_config(OmegaConf.create({"host": host})) == expected


def test_a_bad_kf_pipelines_endpoint_is_named(monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", "ftp://h:1")
    with pytest.raises(ConfigError, match=r"^\$KF_PIPELINES_ENDPOINT='ftp://h:1': .*http:// or https://"):
        host_from_config(OmegaConf.create({"host": None}))


@pytest.mark.parametrize("overrides, message", [
    (["backend.mode=submit", "backend.volume.storage_class=nfs-client"], r"needs the KFP API host"),
    (["backend.mode=submit", "backend.host=http://kfp"], r"backend\.volume\.storage_class=null.*kubectl get storage"),
    (["backend.mode=check"], r"backend\.mode=check asks the cluster and finds no access"),
    (["backend.mode=submit", "backend.host=http://kfp", "backend.volume.storage_class=nfs",
      "backend.token_env=MMCLF_UNSET_TOKEN"], r"\$MMCLF_UNSET_TOKEN is unset"),
    (["logger=mlflow"], r"logger\.mlflow\.tracking_uri=None: the pods report to MLflow on the cluster"),
    (["logger=mlflow", "logger.mlflow.tracking_uri=sqlite:////tmp/m.db"], r"need a tracking server they can reach"),
])
def test_submit_and_check_are_refused_before_anything_is_created(tmp_path, overrides, message):
    cfg = compose_cfg(["backend=kfp", "data=synthetic", *overrides])
    with pytest.raises(ConfigError, match=message):
        KfpBackend().check(cfg)  # the validation callback's call, before Hydra makes the run dir
    with pytest.raises(ConfigError, match=message):
        KfpBackend().run(cfg, RunDir(tmp_path), JobContext())
    assert list(tmp_path.iterdir()) == []

"""backend=kfp, mode=local: the pipeline executed for real through kfp.local; and what the pods run:
backends.kfp.pod (the steps) and backends.kfp.volume.permissions (the volume-permissions task)."""
import base64
import json
import os
import re
import stat
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from backends.kfp.backend import KfpBackend
from backends.kfp.compiling.compile import pod_config_yaml
from backends.kfp.kfp_local import run_local
from backends.kfp.pod import main as pod_main
from backends.kfp.volume import permissions
from mmclf.errors import ConfigError, StepError
from mmclf.reports.jobs import JobContext
from mmclf.run.rundir import RunDir
from tests.conftest import compose_cfg, tiny_overrides

# Files a run dir holds whatever the backend; Hydra's own and kfp.local's outputs are not among them.
BACKEND_FILES = re.compile(r"^(\.hydra|\.kfp_local|mmclf\.log)")


def run_dir_files(run_dir) -> set:
    """Relative paths of the run's files, with mmcv's log timestamps masked."""
    paths = {str(path.relative_to(run_dir)) for path in run_dir.rglob("*") if path.is_file()}
    return {re.sub(r"\d{8}_\d{6}", "<time>", path) for path in paths if not BACKEND_FILES.match(path)}


def artifact_metadata(run_dir) -> dict:
    """Output artifact name -> metadata, from produce-metrics' executor output under kfp.local's pipeline_root."""
    (output,) = RunDir(run_dir).kfp_local.glob("*/produce-metrics/executor_output.json")
    artifacts = json.loads(output.read_text())["artifacts"]
    return {name: value["artifacts"][0]["metadata"] for name, value in artifacts.items()}


def task_output(run_dir, task: str, name: str):
    """(path, metadata) of a task's output artifact, from kfp.local's pipeline_root."""
    (output,) = RunDir(run_dir).kfp_local.glob(f"*/{task}/executor_output.json")
    (artifact,) = json.loads(output.read_text())["artifacts"][name]["artifacts"]
    return Path(artifact["uri"]), artifact["metadata"]


@pytest.mark.slow
def test_local_mode_runs_the_pipeline_and_leaves_the_same_run_dir_as_backend_local(tmp_path, data_root,
                                                                                   finished_run):
    run_dir = tmp_path / "kfp"
    # Compiled with another seed and rate; the run's parameters (as a KFP run takes them, e.g. from the
    # UI) bring both back to the finished run's: the pods must train with the parameters' values.
    cfg = compose_cfg(["backend=kfp", "backend.mode=local", *tiny_overrides(data_root), "seed=5",
                       "schedule.optimizer.lr=0.3"])
    wanted = OmegaConf.load(finished_run / "config.yaml")
    metrics = run_local(cfg, RunDir(run_dir), {"seed": wanted.seed, "learning_rate": wanted.schedule.optimizer.lr})

    assert metrics == json.loads((run_dir / "metrics.json").read_text())
    pod_cfg = OmegaConf.load(run_dir / "config.yaml")
    assert (pod_cfg.seed, pod_cfg.schedule.optimizer.lr) == (wanted.seed, wanted.schedule.optimizer.lr) != (5, 0.3)
    assert pod_cfg.data.root == str(data_root), "data.root kept as configured (absolute)"
    scalars = {key: value for key, value in metrics.items() if isinstance(value, (int, float))}
    assert artifact_metadata(run_dir)["metrics"] == pytest.approx(scalars), "the Metrics artifact: metrics.json's"
    confusion = artifact_metadata(run_dir)["classification"]["confusionMatrix"]
    assert [spec["displayName"] for spec in confusion["annotationSpecs"]] == metrics["confusion_matrix"]["classes"]
    assert [row["row"] for row in confusion["rows"]] == metrics["confusion_matrix"]["matrix"]

    # the checkpoint and the ONNX model leave the volume as a Model, from the export task
    model, about = task_output(run_dir, "export", "model")
    assert sorted(path.name for path in model.iterdir()) == ["epoch_1.pth", "labels.txt", "mmcls_config.py",
                                                             "model.onnx"]
    for name in ("work_dir/epoch_1.pth", "model.onnx"):
        assert (model / Path(name).name).read_bytes() == (run_dir / name).read_bytes()
    assert about == {"framework": "mmcls", "model": "resnet18", "dataset": "synthetic", "epochs": 1,
                     "num_classes": 10, "checkpoint": "epoch_1.pth", "config": "mmcls_config.py",
                     "onnx": "model.onnx", "labels": "labels.txt"}
    report, _ = task_output(run_dir, "produce-metrics", "report")  # self-contained: the UI shows the plots
    page = report.read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)">', page)
    assert [(alt, base64.b64decode(data)) for alt, data in images] == [
        ("Confusion matrix", (run_dir / "confusion_matrix.png").read_bytes()),
        ("Training curve", (run_dir / "training_curve.png").read_bytes())]
    assert f"<td>test_accuracy_top-1</td><td>{metrics['test_accuracy_top-1']:.2f}</td>" in page

    task_records = {RunDir.LOCK, RunDir.JOB}  # the task's, around any backend: run_local is called below it
    assert run_dir_files(run_dir) == run_dir_files(finished_run) - task_records, "the same files as backend=local"
    assert "metrics.json" in run_dir_files(run_dir) and "work_dir/epoch_1.pth" in run_dir_files(run_dir)


@pytest.mark.slow
def test_a_failing_task_ends_local_mode_with_one_clear_error(tmp_path, data_root):
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("")
    cfg = compose_cfg(["backend=kfp", "backend.mode=local", *tiny_overrides(data_root), f"data.root={not_a_folder}"])
    with pytest.raises(StepError, match=r"^backend\.mode=local: Pipeline 'mmclf' finished with status FAILURE\. "
                                        r"Inner task failed: 'prepare-data'\."):
        # the backend itself: run() would refuse the data.root first
        KfpBackend().run(cfg, RunDir(tmp_path / "run"), JobContext())
    assert not (tmp_path / "run/metrics.json").exists()


def test_local_mode_refuses_container_components_before_any_work(tmp_path, data_root):
    cfg = compose_cfg(["backend=kfp", "backend.mode=local", "backend.component=container", *tiny_overrides(data_root)])
    with pytest.raises(ConfigError, match="backend.component=container.*backend.mode=local"):
        KfpBackend().run(cfg, RunDir(tmp_path / "run"), JobContext())
    assert not (tmp_path / "run").exists()


def test_step_entry_runs_a_step_from_the_yaml_parameter_and_exports_a_file(tmp_path, data_root):
    cfg = compose_cfg(tiny_overrides(data_root))
    config_yaml = json.dumps(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    run_dir, exported = tmp_path / "run", tmp_path / "artifacts" / "config"
    pod_main(["prepare_data", "--config-yaml", config_yaml, "--run-dir", str(run_dir),
               "--export", "config.yaml", str(exported)])
    assert OmegaConf.load(run_dir / "config.yaml") == OmegaConf.create(config_yaml)
    assert exported.read_text() == (run_dir / "config.yaml").read_text()


def test_step_entry_ends_a_user_error_with_one_line(tmp_path, data_root, capsys):
    config_yaml = OmegaConf.to_yaml(compose_cfg(tiny_overrides(data_root)), resolve=True)
    with pytest.raises(SystemExit) as exit_info:
        pod_main(["test", "--config-yaml", config_yaml, "--run-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    (message,) = [line for line in err.splitlines() if line.startswith("mmclf: error:")]
    assert "checkpoint" in message and "Traceback" not in err


def test_step_entry_applies_the_typed_parameters_in_the_runs_own_folder(tmp_path, data_root):
    cfg = compose_cfg(["backend=kfp", *tiny_overrides(data_root), "schedule=fast"])
    config_yaml = pod_config_yaml(cfg, str(data_root))  # as compiled: keeps the link max_lr -> lr
    base = tmp_path / "runs" / "job"
    pod_main(["prepare_data", "--config-yaml", config_yaml, "--run-dir", str(base), "--run-id", "4f2c",
              "--learning-rate", "0.2", "--epochs", "3", "--batch-size", "16", "--seed", "7"])
    assert not base.exists(), "each KFP run writes in <run dir>-<run id>"
    used = OmegaConf.load(tmp_path / "runs" / "job-4f2c" / "config.yaml")
    assert (used.schedule.optimizer.lr, used.schedule.lr_config.max_lr) == (0.2, 0.2)
    assert (used.schedule.runner.max_epochs, used.data.samples_per_gpu, used.seed) == (3, 16, 7)


@pytest.mark.parametrize("option, value, said", [
    ("--epochs", "0", "pipeline parameter epochs=0: must be a positive integer"),
    ("--learning-rate", "-0.1", "pipeline parameter learning_rate=-0.1: must be a positive number"),
    ("--learning-rate", "nan", "pipeline parameter learning_rate=nan"),
    ("--seed", "4294967296", "pipeline parameter seed=4294967296: must be an integer from 0"),
])
def test_a_bad_pipeline_parameter_ends_the_pod_in_one_line(tmp_path, data_root, capsys, option, value, said):
    config_yaml = pod_config_yaml(compose_cfg(["backend=kfp", *tiny_overrides(data_root)]), str(data_root))
    with pytest.raises(SystemExit) as exit_info:
        pod_main(["prepare_data", "--config-yaml", config_yaml, "--run-dir", str(tmp_path / "run"), option, value])
    assert exit_info.value.code == 2 and not (tmp_path / "run").exists()
    (message,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmclf: error:")]
    assert said in message


def refuse(path):
    def run_step(*args, **kwargs):  # what a root-owned volume answers the image's user
        raise PermissionError(13, "Permission denied", path)

    return run_step


def test_a_volume_the_pods_user_cannot_write_is_one_line_naming_the_fix(data_root, monkeypatch, capsys):
    config_yaml = pod_config_yaml(compose_cfg(["backend=kfp", *tiny_overrides(data_root)]), "/mnt/mmclf/data")
    monkeypatch.setattr("backends.kfp.pod.run_step", refuse("/mnt/mmclf/runs"))
    with pytest.raises(SystemExit) as exit_info:
        pod_main(["prepare_data", "--config-yaml", config_yaml, "--run-dir", "/mnt/mmclf/runs/job", "--run-id", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    (message,) = [line for line in err.splitlines() if line.startswith("mmclf: error:")]
    assert "/mnt/mmclf/runs: permission denied to this pod's user" in message
    assert "backend.volume.make_writable=true" in message and "Traceback" not in err
    monkeypatch.setattr("backends.kfp.pod.run_step", refuse("/home/mmclf/.cache"))  # not the volume: not ours
    with pytest.raises(PermissionError):
        pod_main(["prepare_data", "--config-yaml", config_yaml, "--run-dir", "/mnt/mmclf/runs/job"])


def test_volume_permissions_leaves_a_writable_folder_alone_and_opens_a_foreign_one(tmp_path, capsys):
    mine = os.getuid(), os.getgid()
    stranger = (mine[0] + 4242, mine[1] + 4242)
    (tmp_path / "runs").mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path / "runs", 0o755)
    assert permissions.writable_for(tmp_path, *mine) and not permissions.writable_for(tmp_path, *stranger)
    permissions.main([str(tmp_path), *map(str, mine)])
    assert "already writable" in capsys.readouterr().out
    permissions.main([str(tmp_path), *map(str, stranger)])
    out = capsys.readouterr().out
    # As root, chown; otherwise (or without CAP_CHOWN, as in KFP >= 2.16 pods) the owner's chmod.
    assert out.count("chown") + out.count("chmod a+rwx") == 2, out
    assert permissions.writable_for(tmp_path, *stranger) and permissions.writable_for(tmp_path / "runs", *stranger)


def test_volume_permissions_without_chown_opens_the_folder_by_chmod(tmp_path, monkeypatch):
    os.chmod(tmp_path, 0o755)
    monkeypatch.setattr(os, "chown", refuse_chown)  # KFP >= 2.16 drops every capability: CAP_CHOWN too
    assert permissions.make_writable(tmp_path, os.getuid() + 4242, os.getgid() + 4242) == "chmod a+rwx"
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o777


def test_volume_permissions_that_cannot_help_fails_in_one_line(tmp_path, monkeypatch, capsys):
    os.chmod(tmp_path, 0o755)
    monkeypatch.setattr(os, "chown", refuse_chown)
    monkeypatch.setattr(os, "chmod", refuse_chown)  # not the owner: an NFS export with root squashed, say
    with pytest.raises(SystemExit) as ended:
        permissions.main([str(tmp_path), "4242", "4242"])
    assert ended.value.code == 2, "a volume this task cannot change is a refusal"
    (message,) = capsys.readouterr().err.splitlines()
    assert message.startswith(f"mmclf: error: {tmp_path} is owned by uid {os.getuid()}")
    assert "backend.volume.make_writable=false" in message


def refuse_chown(*args):
    raise PermissionError(1, "Operation not permitted")

"""backend=kfp, mode=local: the pipeline executed for real through kfp.local; and the pods' entry, backends.kfp.pod."""
import json
import re

import pytest
from omegaconf import OmegaConf

from backends.kfp.backend import KfpBackend
from backends.kfp.pod import main as pod_main
from mmclf.errors import ConfigError, StepError
from mmclf.jobs import JobContext
from mmclf.rundir import RunDir
from mmclf.task import run
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


@pytest.mark.slow
def test_local_mode_runs_the_pipeline_and_leaves_the_same_run_dir_as_backend_local(tmp_path, data_root,
                                                                                   finished_run):
    run_dir = tmp_path / "kfp"
    cfg = compose_cfg(["backend=kfp", "backend.mode=local", *tiny_overrides(data_root)])
    objective = run(cfg, run_dir)  # the entry point's own path: validate, backend, objective

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert objective == metrics["accuracy_top-1"]
    scalars = {key: value for key, value in metrics.items() if isinstance(value, (int, float))}
    shown = artifact_metadata(run_dir)
    assert shown["metrics"] == pytest.approx(scalars), "the KFP Metrics artifact holds metrics.json's scalars"
    confusion = shown["classification"]["confusionMatrix"]
    assert [spec["displayName"] for spec in confusion["annotationSpecs"]] == metrics["confusion_matrix"]["classes"]
    assert [row["row"] for row in confusion["rows"]] == metrics["confusion_matrix"]["matrix"]
    (report,) = RunDir(run_dir).kfp_local.glob("*/produce-metrics/report")
    assert report.read_text() == (run_dir / "report.md").read_text()
    pod_cfg = OmegaConf.load(run_dir / "config.yaml")
    assert pod_cfg.data.root == str(data_root), "data.root kept as configured (absolute)"

    assert run_dir_files(run_dir) == run_dir_files(finished_run), "the same files as backend=local leaves"
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

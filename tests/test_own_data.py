"""data=folder end to end: one command trains, validates and tests your own images; mmcls's own tools
load the checkpoint; the report names classes and shows the mistakes; bad images stop before training;
Kubeflow reads the folder from the volume."""
import json
import subprocess
import sys

import pytest
import yaml

from backends.kfp.backend import KfpBackend
from mmclf.errors import ConfigError
from mmclf.reports.jobs import JobContext
from mmclf.run.rundir import RunDir
from mmclf.task import run
from tests.conftest import compose_cfg, folder_overrides, run_cli, write_image_folder
from tests.test_mmcls_tools import MMCLS_TEST_TOOL


def test_one_command_trains_validates_and_tests_a_folder(folder_run):
    metrics = json.loads((folder_run / "metrics.json").read_text())
    assert metrics["num_test_images"] == 18
    assert {"val_accuracy_top-1", "test_accuracy_top-1", "val_accuracy_top-3", "test_f1_score"} <= set(metrics)
    assert list(metrics["per_class_accuracy"]) == ["cat", "dog", "owl"]
    job = json.loads((folder_run / "job.json").read_text())
    assert job["objective"] == metrics["val_accuracy_top-1"], "sweeps read the validation split"
    manifest = json.loads((folder_run / "data.json").read_text())
    assert manifest["classes"] == ["cat", "dog", "owl"] and manifest["splits"]["train"]["images"] == 48
    predictions = json.loads((folder_run / "predictions.json").read_text())
    assert predictions["files"][0] == "test/cat/0.png" and len(predictions["files"]) == 18
    val_log = [json.loads(line) for log in (folder_run / "work_dir").glob("*.log.json")
               for line in log.read_text().splitlines() if '"mode": "val"' in line]
    assert len(val_log) == 2, "each epoch is validated"


def test_the_report_names_classes_and_shows_misclassified_images(folder_run):
    report = (folder_run / "report.md").read_text()
    assert "| owl |" in report
    predictions = json.loads((folder_run / "predictions.json").read_text())
    mistakes = sum(g != p for g, p in zip(predictions["gt_label"], predictions["pred_label"], strict=True))
    assert ("![misclassified test images](misclassified.png)" in report) == (mistakes > 0)
    assert (folder_run / "misclassified.png").is_file() == (mistakes > 0)


@pytest.mark.slow
def test_mmcls_tools_evaluate_a_folder_run_to_the_same_top1(folder_run, tmp_path):
    out = tmp_path / "top1.json"
    result = subprocess.run([sys.executable, MMCLS_TEST_TOOL, str(RunDir(folder_run).mmcls_config),
                             str(RunDir(folder_run).checkpoint(2)), "--metrics", "accuracy", "--out", str(out),
                             "--device", "cpu"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = json.loads((folder_run / "eval_result.json").read_text())["accuracy_top-1"]
    assert json.loads(out.read_text())["accuracy_top-1"] == pytest.approx(expected)


def test_the_device_loader_trains_from_the_cache(images, tmp_path):
    objective = run(compose_cfg([*folder_overrides(images), "data.loader=device"]), tmp_path / "run")
    assert 0 <= objective <= 100


@pytest.mark.slow
def test_corrupt_images_stop_the_cli_in_one_line_before_training(images, tmp_path):
    broken = tmp_path / "broken"
    write_image_folder(broken, per_split={"train": 4, "test": 2})
    (broken / "train/owl/0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    run_dir = tmp_path / "run"
    result = run_cli(*folder_overrides(broken), f"hydra.run.dir={run_dir}")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("mmclf: error:")]
    assert len(errors) == 1 and "train/owl/0.png" in errors[0] and "Traceback" not in result.stderr
    assert not (run_dir / "work_dir").exists(), "nothing trained"


def compile_folder(run_dir, *overrides):
    cfg = compose_cfg(["backend=kfp", *folder_overrides("pets"), "backend.volume.mode=existing",
                       "backend.volume.claim_name=datasets", *overrides])
    KfpBackend().check(cfg)
    KfpBackend().run(cfg, RunDir(run_dir), JobContext())
    spec = next(yaml.safe_load_all((run_dir / "pipeline.yaml").read_text()))
    return json.loads(spec["root"]["inputDefinitions"]["parameters"]["config_yaml"]["defaultValue"])


@pytest.mark.usefixtures("no_cluster_access")
def test_kubeflow_reads_the_folder_from_the_volume(tmp_path):
    pod_cfg = compile_folder(tmp_path)
    assert pod_cfg["data"]["root"] == "/mnt/mmclf/data/pets"
    assert pod_cfg["data"]["cache_dir"] == "/mnt/mmclf/data/pets/.mmclf_cache"
    with pytest.raises(ConfigError, match=r"^data\.root=/home/me/pets, .*: the pods see the shared volume"):
        compile_folder(tmp_path / "local", "data.root=/home/me/pets")
    with pytest.raises(ConfigError, match="backend.volume.mode=create starts from an empty one"):
        compile_folder(tmp_path / "create", "backend.volume.mode=create")

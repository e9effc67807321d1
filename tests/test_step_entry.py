"""The one way into a step in a process of its own, ``python -m mmclf.steps NAME --run-dir DIR``
(what torchrun's ranks and Kubeflow Trainer's nodes run), and how every entry point ends: a refusal
in one line with exit status 2, a failure in one line with exit status 1."""
import json

from mmclf.run.io import write_json_atomic
from mmclf.run.rundir import RunDir
from tests.conftest import run_cli, tiny_overrides


def test_a_step_runs_in_a_process_of_its_own_from_the_run_dirs_config(copy_of_finished_run):
    run_dir = RunDir(copy_of_finished_run)
    skipped = run_cli("metrics", "--run-dir", run_dir.path, module="mmclf.steps")
    assert skipped.returncode == 0 and "step metrics: already done" in skipped.stderr, \
        "config.yaml is the config the run was recorded with"
    record = json.loads(run_dir.steps_record.read_text())
    write_json_atomic(run_dir.steps_record, {name: done for name, done in record.items() if name != "metrics"})
    run_dir.metrics.unlink()
    result = run_cli("metrics", "--run-dir", run_dir.path, module="mmclf.steps")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "step metrics: done" in result.stderr and run_dir.metrics.is_file()
    rerun = json.loads(run_dir.steps_record.read_text())
    assert rerun["metrics"]["config"] == record["metrics"]["config"] and rerun["train"] == record["train"]


def test_a_run_dir_without_a_config_is_refused_in_one_line(tmp_path):
    result = run_cli("test", "--run-dir", tmp_path / "empty", module="mmclf.steps")
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"mmclf: error: {tmp_path / 'empty' / 'config.yaml'}: no such file; prepare_data")
    assert not (tmp_path / "empty").exists(), "nothing made"


def test_a_failure_is_one_line_with_exit_status_1(tmp_path, data_root):
    result = run_cli(*tiny_overrides(data_root), "schedule.optimizer.lr=1e30", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1, result.stderr[-2000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("mmclf: error:")]
    assert "training loss became" in line and "Traceback" not in result.stderr

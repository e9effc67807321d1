"""mmcls's own tools: its ``tools/test.py``, as pip installs it, evaluates a run's ``work_dir/mmcls_config.py``
and checkpoint, from any folder, to the same top-1 as the run's ``eval_result.json`` (a synthetic and a
digits run)."""
import json
import os
import subprocess
import sys

import mmcls
import pytest

from mmclf.run.rundir import RunDir
from mmclf.task import run
from tests.conftest import compose_cfg, digits_overrides

MMCLS_TEST_TOOL = os.path.join(os.path.dirname(mmcls.__file__), ".mim", "tools", "test.py")  # as pip installs it


def mmcls_tools_top1(run_dir, epoch, cwd, out):
    result = subprocess.run([sys.executable, MMCLS_TEST_TOOL, str(RunDir(run_dir).mmcls_config),
                             str(RunDir(run_dir).checkpoint(epoch)), "--metrics", "accuracy", "--out", str(out),
                             "--device", "cpu"], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())["accuracy_top-1"]


@pytest.mark.slow
def test_mmcls_tools_evaluate_a_synthetic_run_to_the_same_top1(finished_run, tmp_path):
    expected = json.loads((finished_run / "eval_result.json").read_text())["accuracy_top-1"]
    assert mmcls_tools_top1(finished_run, 1, cwd=finished_run, out=tmp_path / "top1.json") == pytest.approx(expected)


@pytest.mark.slow
def test_mmcls_tools_evaluate_a_digits_run_to_the_same_top1(tmp_path, data_root):
    run_dir = tmp_path / "run"
    run(compose_cfg(digits_overrides(data_root)), run_dir)  # its dumped config starts DataLoader workers too
    expected = json.loads((run_dir / "eval_result.json").read_text())["accuracy_top-1"]
    assert mmcls_tools_top1(run_dir, 1, cwd=tmp_path, out=tmp_path / "top1.json") == pytest.approx(expected)

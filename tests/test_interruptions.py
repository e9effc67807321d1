"""A stopped run (Ctrl-C, SIGTERM) and damaged run records end in one line, and the same command
carries on from what is on disk."""
import json
import signal
import subprocess
import sys

import pytest

from mmclf.task import run
from tests.conftest import REPO, compose_cfg, tiny_overrides
from tests.test_resume import trained_epochs, wait_for_log_entry


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_in_one_line_and_records_it(tmp_path, data_root, signum, status):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "mmclf", *tiny_overrides(data_root), "schedule.runner.max_epochs=50",
            f"hydra.run.dir={run_dir}"]
    launched = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_log_entry(run_dir / "work_dir", epoch=1, timeout=120)
    launched.send_signal(signum)
    _, stderr = launched.communicate(timeout=60)
    assert launched.returncode == status and "Traceback" not in stderr, stderr[-3000:]
    name = signal.Signals(signum).name
    assert stderr.strip().splitlines()[-1] == (f"mmclf: stopped by {name}; {run_dir} keeps what finished: run the "
                                               "same command again to resume")
    record = json.loads((run_dir / "job.json").read_text())
    assert record["status"] == "stopped" and record["error"] == f"JobStopped: stopped by {name}"


@pytest.mark.parametrize("record", ["job.json", "steps.json"])
def test_a_damaged_run_record_is_ignored_with_a_warning(copy_of_finished_run, data_root, record, caplog):
    expected = json.loads((copy_of_finished_run / "job.json").read_text())["objective"]
    if record == "steps.json":  # as a Kubeflow pod retried on the volume sees it: steps.json alone
        (copy_of_finished_run / "job.json").unlink()
    (copy_of_finished_run / record).write_bytes(b'{"status": "succ\xff')  # torn and not UTF-8
    assert run(compose_cfg(tiny_overrides(data_root)), copy_of_finished_run) == expected
    assert f"{copy_of_finished_run / record} is damaged" in caplog.text
    assert json.loads((copy_of_finished_run / record).read_text()), "written afresh"
    assert trained_epochs(copy_of_finished_run / "work_dir") == [1], "epoch 1 is not trained again"

"""Sweeps on a cluster: with submit and wait, Hydra's joblib launcher (preset by conf/backend/kfp.yaml)
keeps up to backend.max_in_flight KFP runs going at once; every other mode runs one job at a time."""
import csv

import pytest

from tests.conftest import compose_cfg, run_cli, tiny_overrides
from tests.kfp_server import DEFAULT_METRICS, FakeKfpServer


@pytest.mark.parametrize("overrides, jobs_at_once", [
    (["backend.mode=submit", "backend.wait=true", "backend.max_in_flight=6"], 6),
    (["backend.mode=submit", "backend.wait=true"], 4),
    (["backend.mode=submit", "backend.max_in_flight=6"], 1),  # returns at once: nothing to wait for together
    (["backend.mode=compile", "backend.max_in_flight=6"], 1),
    (["backend.mode=local", "backend.max_in_flight=6"], 1),  # trains here: jobs would share the cores
])
def test_kfp_sweeps_use_the_joblib_launcher_with_jobs_at_once_by_mode(overrides, jobs_at_once):
    cfg = compose_cfg(["backend=kfp", *overrides], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert cfg.hydra.launcher.n_jobs == jobs_at_once


def test_the_local_backend_keeps_hydras_basic_launcher():
    launcher = compose_cfg([], return_hydra_config=True).hydra.launcher._target_
    assert launcher == "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


@pytest.mark.slow
def test_a_submit_and_wait_sweep_keeps_its_runs_in_flight_together(tmp_path, data_root):
    sweep_dir = tmp_path / "sweep"
    # The fake's runs finish only once two exist; a run polled alone 1,200 times (a minute) fails instead.
    with FakeKfpServer(together=2, alone_limit=1200) as server:
        result = run_cli("-m", *tiny_overrides(data_root), "backend=kfp", "backend.mode=submit", "backend.wait=true",
                         f"backend.host={server.url}", "backend.poll_interval_s=0.05", "backend.max_in_flight=2",
                         "backend.volume.storage_class=nfs-client", "schedule.optimizer.lr=0.1,0.05",
                         f"hydra.sweep.dir={sweep_dir}", env={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert server.most_in_flight == 2
    with open(sweep_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["status"] for row in rows] == ["succeeded", "succeeded"], [row["error"] for row in rows]
    assert {float(row["objective"]) for row in rows} == {DEFAULT_METRICS["val_accuracy_top-1"]}
    assert len({row["kfp_run_dir"] for row in rows}) == 2, "each run writes its own folder"

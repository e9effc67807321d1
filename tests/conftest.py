"""Shared test helpers: compose the real Hydra config and run on tiny synthetic data."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import mmclf.schema  # noqa: F401  (registers the typed schemas)

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = REPO / "conf"


def compose_cfg(overrides=()):
    """The config ``python -m mmclf <overrides>`` would run with (without the hydra node)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def tiny_overrides(data_root) -> list[str]:
    """One epoch of ResNet-18 on 64 synthetic 16x16 images: a few seconds on a CPU."""
    return [
        "data=synthetic", "data.num_train=64", "data.num_test=32", f"data.root={data_root}",
        "schedule=quick", "schedule.runner.max_epochs=1", "runtime.log_config.interval=1", "device=cpu",
    ]


def run_cli(*args, cwd=REPO, env=None, timeout=300):
    """``python -m mmclf ARGS`` in a subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "mmclf", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A data root shared by the session's tests, so synthetic data is written once."""
    return tmp_path_factory.mktemp("data")

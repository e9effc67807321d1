"""An installed, non-editable copy of mmclf finds its Hydra configs without the source tree."""
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_installed_wheel_ships_conf_and_runs_from_anywhere(tmp_path):
    wheel_dir, site, source = tmp_path / "wheel", tmp_path / "site", tmp_path / "source"
    # setuptools builds in the source folder (build/, *.egg-info): build from a copy, leave the checkout alone.
    local_state = {".git", ".venv", "outputs", "multirun", "data", "build", "mmclf.egg-info"}
    shutil.copytree(REPO, source, ignore=lambda folder, names: local_state & set(names) if folder == str(REPO) else ())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(wheel_dir), str(source)], check=True, cwd=tmp_path)
    wheel = next(wheel_dir.glob("mmclf-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    str(wheel)], check=True)
    assert (site / "mmclf/conf/config.yaml").is_file() and (site / "mmclf/conf/model/resnet50_cifar.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import mmclf, backends; print(mmclf.__file__, backends.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
    assert str(REPO) not in where, f"the source tree was imported instead of the installed copy: {where}"
    job = subprocess.run([sys.executable, "-m", "mmclf", "--cfg", "job", "model=resnet50_cifar", "backend=kfp"],
                         cwd=elsewhere, env=env, capture_output=True, text=True)
    assert job.returncode == 0, job.stderr  # backend=kfp composes: its schema is found through the entry points
    assert "depth: 50" in job.stdout and "_target_: backends.kfp.backend.KfpBackend" in job.stdout
    assert (site / "bin/mmclf").is_file(), "the mmclf console script is installed"

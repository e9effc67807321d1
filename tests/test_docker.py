"""docker/Dockerfile and .dockerignore, checked statically (no Docker engine needed)."""
import fnmatch
import re
import tomllib

import pytest

from tests.conftest import REPO

BASE = "python:3.11-slim"
VENV = "/opt/mmclf"
BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "cmake", "git")
# What `pip install .` reads from the build context.
NEEDED = ["pyproject.toml", "constraints.txt", "README.md", "mmclf/__main__.py", "backends/kfp/pod.py",
          "backends/kfp/backend.py", "backends/kfp/components.py", "conf/config.yaml", "conf/backend/kfp.yaml",
          "conf/data/cifar10.yaml", "mmclf/training/fast/runner.py"]  # conf/data: the "data" rule must spare it


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, one list per build stage (each starting with its FROM)."""
    steps = instructions((REPO / "docker/Dockerfile").read_text())
    args = {value.split("=", 1)[0]: value.split("=", 1)[1] for op, value in steps if op == "ARG" and "=" in value}
    result = []
    for op, value in steps:
        if op == "FROM":
            result.append([])
            value = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], value)
        if result:
            result[-1].append((op, value))
    return result


def test_every_stage_starts_from_python_slim(stages):
    assert len(stages) >= 2, "multi-stage: the install's leftovers stay in the build stage"
    assert all(stage[0][1].split()[0] == BASE for stage in stages)


def test_the_install_is_the_projects_one_pinned_recipe(stages):
    (install,) = [value for stage in stages for op, value in stage if op == "RUN" and "pip install" in value]
    assert "PIP_CONSTRAINT=constraints.txt" in install
    assert re.search(r"pip install( --[\w-]+)* \.$", install), f"a plain `pip install .`, not editable: {install}"
    makefile = (REPO / "Makefile").read_text()
    assert "PIP_CONSTRAINT=constraints.txt" in makefile, "the Makefile installs with the same constraints"
    assert "setuptools<81" in (REPO / "constraints.txt").read_text()


def test_the_package_carries_its_configs(stages):
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["mmclf.conf"] == "conf"
    assert {"mmclf", "mmclf.conf", "backends"} <= set(setuptools["packages"])
    build = stages[0]
    assert ("COPY", ". .") in build, "the build stage copies the (filtered) project"
    assert ("RUN", f"python -m venv {VENV}") in build


def test_runtime_stage_runs_as_non_root_without_build_tools(stages):
    runtime = stages[-1]
    users = [value for op, value in runtime if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the pods run as a non-root user"
    assert [value for op, value in runtime if op == "COPY"] == [f"--from=build {VENV} {VENV}"]
    for op, value in runtime:
        if op == "RUN":
            assert "pip install" not in value
            installed = value.split("apt-get install", 1)[-1].split("&&")[0].split() if "apt-get" in value else []
            assert not set(installed) & set(BUILD_TOOLS), f"build tools in the runtime image: {installed}"
    env = " ".join(value for op, value in runtime if op == "ENV")
    assert f"PATH={VENV}/bin:" in env, "python and python3 are the installed environment's"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: a pattern is anchored at the context root and excludes a folder with all
    below it; ``**/`` stands for any number of folders."""
    parts = path.split("/")
    for end in range(1, len(parts) + 1):  # the path and each folder above it
        for pattern in patterns:
            if pattern.startswith("**/"):
                tails = ["/".join(parts[start:end]) for start in range(end)]
                if any(fnmatch.fnmatch(tail, pattern[3:]) for tail in tails):
                    return True
            elif fnmatch.fnmatch("/".join(parts[:end]), pattern):
                return True
    return False


def test_dockerignore_keeps_local_state_out_and_the_project_in():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for local in [".git/config", ".venv/bin/python", "outputs/2026-01-01/run/metrics.json", "multirun/x/0/a",
                  "data/cifar10/x", "work_dir/epoch_1.pth", "backends/kfp/__pycache__/pod.cpython-311.pyc", ".env"]:
        assert _ignored(local, patterns), f"{local} would enter the image's build context"
    for needed in NEEDED:
        assert (REPO / needed).is_file(), needed
        assert not _ignored(needed, patterns), f"{needed} is needed by `pip install .`"


def test_make_image_builds_this_dockerfile():
    assert "docker build -f docker/Dockerfile" in (REPO / "Makefile").read_text()

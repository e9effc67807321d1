"""The layout's promises, checked by reading the code: the core knows no orchestrator, both
backends keep the contract, the Kubeflow components follow the step table, and compiling a
pipeline never imports torch, mmcv or mmcls."""
import ast
import json
import subprocess
import sys

import pytest

from backends.base import Backend
from backends.kfp import components
from backends.kfp.backend import KfpBackend
from backends.local import LocalBackend
from mmclf.steps import STEP_NAMES, STEPS
from tests.conftest import REPO, compose_cfg

ORCHESTRATION = ("kfp", "kfp_server_api", "backends", "kubernetes")


def imported_modules(path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth of the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((REPO / "mmclf").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_the_core_imports_no_orchestrator(path):
    assert not imported_modules(path) & set(ORCHESTRATION), f"{path.name} imports Kubeflow or a backend"


def test_the_import_check_can_see_a_nested_import(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("def f():\n    from backends.kfp import pipeline\n    import kfp.dsl\n")
    assert imported_modules(sneaky) == {"backends", "kfp"}


@pytest.mark.parametrize("backend", [LocalBackend(), KfpBackend()], ids=type)
def test_both_backends_keep_the_contract(backend):
    assert isinstance(backend, Backend)


@pytest.mark.parametrize("overrides, expected", [
    (["backend=local"], True),
    (["backend=kfp"], False),
    (["backend=kfp", "backend.mode=local"], True),
    (["backend=kfp", "backend.mode=submit"], False),
    (["backend=kfp", "backend.mode=submit", "backend.wait=true"], True),
])
def test_backends_say_whether_an_objective_comes_back(overrides, expected):
    cfg = compose_cfg(overrides)
    backend = LocalBackend() if cfg.backend._target_.endswith("LocalBackend") else KfpBackend()
    assert backend.returns_objective(cfg) is expected


def test_kubeflow_components_follow_the_step_table():
    assert tuple(components.PYTHON_FUNCTIONS) == STEP_NAMES
    for style in ("python", "container"):
        assert tuple(components.make_components(style, "mmclf:latest")) == STEP_NAMES


def test_step_functions_are_found_by_name_and_only_accelerated_steps_train():
    assert [step.function.__name__ for step in STEPS] == list(STEP_NAMES)
    assert [step.name for step in STEPS if step.accelerated] == ["train", "test"]


def test_compiling_a_pipeline_imports_no_torch_mmcv_or_mmcls(tmp_path):
    script = (
        "import json, sys\n"
        "from mmclf.__main__ import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mmcv', 'mmcls'))\n"
        "print(json.dumps(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, "backend=kfp", f"hydra.run.dir={tmp_path}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "pipeline.yaml").is_file()
    assert json.loads(result.stdout.splitlines()[-1]) == []

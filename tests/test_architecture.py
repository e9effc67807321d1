"""The layout's promises: the import contracts (pyproject.toml's [tool.importlinter], run by `make lint`)
are kept and break when a forbidden import is added, each backends/kfp package's index names its modules, both
backends keep the contract, the Kubeflow components follow the step table, and compiling a pipeline never
loads torch, mmcv or mmcls (measured at run time: the contracts see function-level imports too)."""
import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backends.base import Backend
from backends.kfp import components
from backends.kfp.backend import KfpBackend
from backends.local import LocalBackend
from mmclf.steps import STEP_NAMES, STEPS
from tests.conftest import REPO, compose_cfg

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # import-linter, beside this interpreter


def lint_imports(tree: Path) -> dict[str, str]:
    """lint-imports' verdicts on ``tree`` (a copy of the project's packages and pyproject.toml): each
    contract's name as pyproject.toml spells it -> KEPT or BROKEN."""
    result = subprocess.run([str(LINT_IMPORTS)], cwd=tree, capture_output=True, text=True, timeout=120)
    # The report's lines, after the "Analyzed N files" line and its underline, up to the count of contracts;
    # long names are folded over two lines.
    report = result.stdout.split("Analyzed", 1)[1].split("\n", 2)[2].split("\nContracts:")[0]
    return dict(re.findall(r"(.+?) (KEPT|BROKEN)(?: |$)", " ".join(report.split())))


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory):
    """A pristine copy of what the contracts read: each test then adds one import to its own copy of it."""
    tree = tmp_path_factory.mktemp("project")
    for package in ("mmclf", "backends"):
        shutil.copytree(REPO / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tree)
    return tree


# The imports (file -> code added to it) that break each promise, and the contract that must say so.
FORBIDDEN = {
    "the core knows no orchestrator": {"mmclf/run/io.py": "def f():\n    import kfp.dsl\n"},
    "using the model never imports training code": {"mmclf/deploy/predict.py": "from mmclf.training import hooks\n"},
    "the core's layers": {"mmclf/data/splits.py": "from mmclf import task\n"},
    "the kfp backend's layers": {"backends/kfp/volume/layout.py": "from backends.kfp import pipeline\n"},
    "the compile path imports no torch": {"backends/kfp/pipeline.py": "import torch\n"},
    "no import cycles": {"mmclf/run/there.py": "from mmclf.run import back\n",
                         "mmclf/run/back.py": "from mmclf.run import there\n"},
}


@pytest.mark.parametrize("contract", FORBIDDEN)
def test_the_import_contracts_catch_a_forbidden_import(project_copy, tmp_path, contract):
    tree = tmp_path / "project"
    shutil.copytree(project_copy, tree)
    for path, code in FORBIDDEN[contract].items():
        with (tree / path).open("a") as module:
            module.write(code)
    verdicts = lint_imports(tree)
    [name] = [name for name in verdicts if name.startswith(contract)]
    assert verdicts[name] == "BROKEN", verdicts


def test_the_project_keeps_every_import_contract(project_copy):
    verdicts = lint_imports(project_copy)
    assert len(verdicts) == 7 and set(verdicts.values()) == {"KEPT"}, verdicts


def indexed_modules(package: Path) -> set[str]:
    """The modules and subpackages ``package``'s docstring indexes: the first word of each line after its
    first paragraph that starts in the first column (an indented line continues the one above); ``name/``
    is a subpackage."""
    docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
    lines = docstring.partition("\n\n")[2].splitlines()
    return {line.split()[0].rstrip("/") for line in lines if line[:1].strip()}


KFP_PACKAGES = sorted(init.parent for init in (REPO / "backends" / "kfp").rglob("__init__.py"))


@pytest.mark.parametrize("package", KFP_PACKAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_each_kfp_package_indexes_its_modules_and_subpackages(package):
    modules = {path.stem for path in package.glob("*.py")} - {"__init__"}
    modules |= {init.parent.name for init in package.glob("*/__init__.py")}
    indexed = indexed_modules(package)
    index = package.relative_to(REPO) / "__init__.py"
    assert not modules - indexed, f"{index}'s index misses {sorted(modules - indexed)}"
    assert not indexed - modules, f"{index}'s index names no such module: {sorted(indexed - modules)}"


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

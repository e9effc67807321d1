"""The layout's promises, checked by reading the code: the core knows no orchestrator, no module imports
itself through others, each backends/kfp package's index names its modules, both backends keep the contract, the
Kubeflow components follow the step table, and compiling a pipeline never imports torch, mmcv or mmcls."""
import ast
import json
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

from backends.base import Backend
from backends.kfp import components
from backends.kfp.backend import KfpBackend
from backends.local import LocalBackend
from mmclf.steps import STEP_NAMES, STEPS
from tests.conftest import REPO, compose_cfg

ORCHESTRATION = ("kfp", "kfp_server_api", "backends", "kubernetes")


def imported_names(path, package: str = "") -> set[str]:
    """Every dotted name ``path`` imports, at any depth of the file (inside functions too): ``import a.b``
    gives a.b, ``from a import b`` a.b (b may be a module or a name in a). ``package``: the package
    relative imports in ``path`` start from."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parents = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            base = ".".join([*parents, *([node.module] if node.module else [])])
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def imported_modules(path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth of the file."""
    return {name.split(".")[0] for name in imported_names(path)}


@pytest.mark.parametrize("path", sorted((REPO / "mmclf").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_the_core_imports_no_orchestrator(path):
    assert not imported_modules(path) & set(ORCHESTRATION), f"{path.name} imports Kubeflow or a backend"


def test_the_import_check_can_see_a_nested_import(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("def f():\n    from backends.kfp import pipeline\n    import kfp.dsl\n")
    assert imported_modules(sneaky) == {"backends", "kfp"}


def module_names(root: Path, packages=("mmclf", "backends")) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``packages`` under ``root`` (a package is its __init__)."""
    modules = {}
    for path in sorted(path for package in packages for path in (root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def project_module(name: str, modules: dict) -> str | None:
    """The project module an imported dotted name is, or is in: its longest prefix that is one."""
    parts = name.split(".")
    prefixes = (".".join(parts[:end]) for end in range(len(parts), 0, -1))
    return next((prefix for prefix in prefixes if prefix in modules), None)


def import_graph(modules: dict) -> dict[str, set[str]]:
    """Module -> the project modules it imports (at any depth of its file)."""
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = {project_module(dotted, modules) for dotted in imported_names(path, package)}
        graph[name] = imported - {None, name}
    return graph


def shortest_cycle(graph: dict, start: str) -> tuple[str, ...] | None:
    """The shortest chain of imports from ``start`` back to ``start`` (breadth first), or None."""
    chains, queue = {start: (start,)}, deque([start])
    while queue:
        module = queue.popleft()
        for imported in sorted(graph[module]):
            if imported == start:
                return (*chains[module], start)
            if imported not in chains:
                chains[imported] = (*chains[module], imported)
                queue.append(imported)
    return None


def import_cycles(graph: dict) -> list[str]:
    """Each module's shortest cycle, as ``a -> b -> a``; a cycle through several modules once (from its
    smallest name)."""
    cycles = set()
    for module in graph:
        cycle = shortest_cycle(graph, module)
        if cycle is not None:
            first = cycle.index(min(cycle))
            cycles.add(" -> ".join((*cycle[first:-1], *cycle[:first], cycle[first])))
    return sorted(cycles)


def test_no_module_imports_itself_through_others():
    # A cycle makes what a module finds at import time depend on which one was imported first.
    cycles = import_cycles(import_graph(module_names(REPO)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_cycle_check_sees_a_cycle_closed_by_an_import_inside_a_function(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.sub import b\n")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("def f():\n    from .. import a\n    import pkg.c.x\n")
    (tmp_path / "pkg" / "c.py").write_text("import os\n")
    graph = import_graph(module_names(tmp_path, packages=("pkg",)))
    assert graph["pkg.sub.b"] == {"pkg.a", "pkg.c"}
    assert import_cycles(graph) == ["pkg.a -> pkg.sub.b -> pkg.a"]


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

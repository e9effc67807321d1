"""The README and the docs site: every ``python -m mmclf...`` command they show is one mmclf accepts.

A command in a ```bash block of README.md or docs/**/*.md is checked without running it: ``python -m
mmclf [-m] OVERRIDES`` must compose with Hydra as the CLI would; ``python -m mmclf.predict|serve|zoo|steps
ARGS`` must get through that module's own argparse parser. The README stays short, and every page is
in mkdocs.yml's nav (``make docs`` builds the site in strict mode, which checks links and anchors).
"""
import argparse
import importlib
import importlib.util
import re
import shlex

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from tests.conftest import REPO, compose_cfg

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
BASH_BLOCK = re.compile(r"^( *)```bash\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
ASSIGNMENT = re.compile(r'^([A-Z_]+)="([^"]*)"$')  # ARGS="..." on first-run.md: the commands after use it
PLACEHOLDER = re.compile(r"<[^>]*>|\$")  # <ns>, $VAR, $(...): shell the checker cannot compose


def commands(text: str):
    """(command, skipped) for each ``python -m mmclf...`` line of the text's bash blocks, continuation
    lines joined, the page's simple ``NAME="..."`` assignments substituted."""
    variables = {}
    for block in BASH_BLOCK.finditer(text):
        indent = len(block.group(1))
        joined = re.sub(r"\\\n\s*", " ", "\n".join(line[indent:] for line in block.group(2).splitlines()))
        for line in joined.splitlines():
            line = line.strip()
            if match := ASSIGNMENT.match(line):
                variables[match.group(1)] = " ".join(match.group(2).split())
            elif line.startswith("python -m mmclf"):
                for name, value in variables.items():
                    line = line.replace(f"${name}", value)
                yield line, bool(PLACEHOLDER.search(line.split("#")[0]))


FOUND = [(page.relative_to(REPO).as_posix(), command, skipped)
         for page in PAGES for command, skipped in commands(page.read_text())]
CHECKED = [(page, command) for page, command, skipped in FOUND if not skipped]
SKIPPED = [(page, command) for page, command, skipped in FOUND if skipped]


def first_of_each_sweep(overrides: list[str]) -> list[str]:
    """A multirun's overrides as its first job gets them: ``lr=0.1,0.05`` -> ``lr=0.1`` (Hydra's own parser)."""
    return [f"{o.get_key_element()}={next(o.sweep_string_iterator())}" if o.is_sweep_override() else o.input_line
            for o in OverridesParser.create().parse_overrides(overrides)]


class Parsed(Exception):
    """Raised in place of running a module's main once its argparse parser has accepted the arguments."""


def check(command: str, monkeypatch=None) -> None:
    """Raise (or fail) unless ``command`` is one mmclf accepts."""
    words = shlex.split(command, comments=True)
    assert words[:2] == ["python", "-m"], command
    module, args = words[2], [word for word in words[3:] if word != "..."]  # "...": and your other overrides
    if module == "mmclf":
        # -m (multirun) composes as its first job would. return_hydra_config=True composes the hydra node
        # too, so hydra/launcher=joblib, hydra.launcher.n_jobs=2 and hydra.sweeper.n_trials=20 are checked
        # against the launcher's and sweeper's own schemas instead of being dropped unchecked.
        compose_cfg(first_of_each_sweep([arg for arg in args if arg not in ("-m", "--multirun")]),
                    return_hydra_config=True)
        return
    # The entry modules build their parser inside main(): run main with parse_args stopped right after
    # parsing, so the arguments are checked by the real parser and nothing else runs.
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{module}: no such module"
    entry = importlib.import_module(f"{module}.__main__" if spec.submodule_search_locations else module)
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(parser, argv=None, namespace=None):
        raise Parsed(parse_args(parser, argv, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    try:
        entry.main(args)
    except Parsed:
        return
    except SystemExit as exited:
        pytest.fail(f"{module} refused the arguments {args} (exit status {exited.code})")
    pytest.fail(f"{module}'s main returned without parsing arguments with argparse")


@pytest.mark.parametrize("page,command", CHECKED, ids=[f"{page}: {command}" for page, command in CHECKED])
def test_the_command_is_one_mmclf_accepts(page, command, monkeypatch):
    check(command, monkeypatch)


def test_the_commands_were_found_and_few_were_skipped():
    assert len(CHECKED) >= 40, CHECKED
    assert len(SKIPPED) <= 3, SKIPPED  # placeholders the checker cannot fill in; keep them rare


def test_a_misspelt_key_does_not_compose():
    with pytest.raises(HydraException, match="optimiser"):
        check("python -m mmclf schedule.optimiser.lr=0.1")


def test_a_misspelt_sweep_value_does_not_compose():
    with pytest.raises(HydraException, match="resnet19_cifar"):
        check("python -m mmclf -m model=resnet19_cifar,resnet34_cifar")


def test_a_misspelt_option_of_an_entry_module_is_refused(monkeypatch):
    with pytest.raises(pytest.fail.Exception, match="refused the arguments"):
        check("python -m mmclf.predict RUN_DIR photo.jpg --topk 3", monkeypatch)


def test_the_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


def nav_pages(node) -> set[str]:
    if isinstance(node, str):
        return {node}
    items = node.values() if isinstance(node, dict) else node
    return set().union(*(nav_pages(item) for item in items))


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    nav = nav_pages(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])
    pages = {page.relative_to(REPO / "docs").as_posix() for page in (REPO / "docs").rglob("*.md")}
    assert nav == pages

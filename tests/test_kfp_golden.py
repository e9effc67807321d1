"""backend=kfp, mode=compile: the whole compiled pipeline.yaml, per component style, and the TrainJob and
InferenceService manifests it writes for review, against golden files in tests/golden/ (as kfp-kubernetes's
snapshot tests compare compiled pipelines with stored YAML).

test_kfp_pipeline.py asserts what the cluster needs, key by key; this catches every other change to what
the pipeline compiles to, which then shows up as a diff to review. When the change is intended, regenerate
the golden files and commit them with it:

    MMCLF_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_kfp_golden.py
"""
import difflib
import os
import re
import time
import types
from pathlib import Path

import pytest

from backends.kfp.backend import KfpBackend
from backends.kfp.compiling import naming
from mmclf.reports.jobs import JobContext
from mmclf.run.rundir import RunDir
from tests.conftest import compose_cfg

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = "MMCLF_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_kfp_golden.py"
# 2026-01-02 03:04:05: the run's folder on the volume is named after the time it was compiled.
FIXED_CLOCK = time.struct_time((2026, 1, 2, 3, 4, 5, 4, 2, 0))

SCHEDULING = ["backend.image=registry.example.com/mmclf:1.0", "+backend.node_selector={pool: gpu, zone: b}",
              "backend.tolerations=[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
              "backend.resources.accelerator_count=2", "backend.resources.cpu=4", "backend.resources.memory=16Gi"]
CASES = {
    "python": ["backend.component=python", "backend.volume.storage_class=nfs-client", "backend.volume.size=50Gi",
               "backend.volume.delete_after=true", "backend.retries=2", "backend.timeout_s=7200"],
    "container": ["backend.component=container", "backend.volume.mode=existing",
                  "backend.volume.claim_name=mmclf-data", "backend.image_pull_secrets=[regcred]",
                  "+backend.pod_labels={team: vision}"],
    "trainjob_serve": ["backend.distributed=trainjob", "dist.nnodes=2", "backend.serve.enabled=true",
                       "backend.volume.storage_class=nfs-client"],
}

pytestmark = pytest.mark.usefixtures("no_cluster_access")  # tests/conftest.py


def normalised(text: str) -> str:
    """``text`` with the kfp SDK's version masked: it is the installed SDK's, not this project's, and no
    input sets it; a kfp upgrade that compiles the same pipeline must not need new golden files."""
    return re.sub(r"^sdkVersion: kfp-\S+$", "sdkVersion: kfp-<version>", text, flags=re.MULTILINE)


def compiled(run_dir: Path, case: str, monkeypatch) -> str:
    """pipeline.yaml of ``python -m mmclf backend=kfp backend.mode=compile`` with the case's overrides,
    compiled at FIXED_CLOCK, normalised."""
    monkeypatch.setattr(naming, "time", types.SimpleNamespace(strftime=lambda fmt: time.strftime(fmt, FIXED_CLOCK)))
    cfg = compose_cfg(["backend=kfp", "backend.mode=compile", "data=synthetic", *SCHEDULING, *CASES[case]])
    KfpBackend().run(cfg, RunDir(run_dir), JobContext())
    return normalised((run_dir / RunDir.PIPELINE).read_text())


def golden_diff(golden: Path, actual: str) -> str:
    """A unified diff from ``golden`` to ``actual`` and how to accept it; empty when they are the same."""
    expected = golden.read_text() if golden.is_file() else ""
    if actual == expected:
        return ""
    lines = difflib.unified_diff(expected.splitlines(keepends=True), actual.splitlines(keepends=True),
                                 fromfile=str(golden), tofile="compiled")
    return f"{''.join(lines)}\nthe compiled pipeline differs from its golden file; if intended: {REGENERATE}"


@pytest.mark.parametrize("case", CASES)
def test_the_compiled_pipeline_matches_its_golden_file(tmp_path, monkeypatch, case):
    actual, golden = compiled(tmp_path, case, monkeypatch), GOLDEN / f"pipeline_{case}.yaml"
    if os.environ.get("MMCLF_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(actual)
    difference = golden_diff(golden, actual)
    assert not difference, difference


@pytest.mark.parametrize("review", [RunDir.TRAINJOB, RunDir.INFERENCE_SERVICE])
def test_the_review_manifests_match_their_golden_files(tmp_path, monkeypatch, review):
    """trainjob.yaml and inferenceservice.yaml, what the train and serve tasks create, written by compile."""
    compiled(tmp_path, "trainjob_serve", monkeypatch)
    actual, golden = (tmp_path / review).read_text(), GOLDEN / review
    if os.environ.get("MMCLF_UPDATE_GOLDEN") == "1":
        golden.write_text(actual)
    difference = golden_diff(golden, actual)
    assert not difference, difference


def test_compiling_twice_gives_the_same_file(tmp_path, monkeypatch):
    # Golden files only work if nothing in compiling depends on dict order, set iteration or the like.
    assert compiled(tmp_path / "first", "python", monkeypatch) == compiled(tmp_path / "second", "python", monkeypatch)


def test_a_difference_is_shown_as_a_diff_with_the_command_that_regenerates(tmp_path):
    golden = tmp_path / "pipeline_x.yaml"
    golden.write_text("a: 1\nb: 2\n")
    message = golden_diff(golden, "a: 1\nb: 3\n")
    assert "-b: 2\n+b: 3\n" in message and message.endswith(REGENERATE)
    assert golden_diff(golden, "a: 1\nb: 2\n") == ""

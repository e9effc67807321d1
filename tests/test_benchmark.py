"""benchmarks/train_throughput.py runs end to end at a smoke size and reports every path."""
import importlib.util
import json

import pytest

from tests.conftest import REPO


def load_benchmark():
    spec = importlib.util.spec_from_file_location("train_throughput", REPO / "benchmarks" / "train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_benchmark_smoke_size_prints_the_table_and_writes_json(tmp_path, capsys):
    benchmark = load_benchmark()
    out = tmp_path / "throughput.json"
    report = benchmark.main(["--num-train", "48", "--image-size", "8", "--batch", "16", "--data-epochs", "1",
                             "--rounds", "1", "--out", str(out), "device=cpu"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    paths = {"train_reference", "train_fast", "train_plain", "data_reference", "data_device"}
    assert set(report["results"]) == paths
    assert all(entry["img_per_s"] > 0 and entry["end_to_end_img_per_s"] > 0 and len(entry["rounds"]) == 1
               for entry in report["results"].values())
    assert set(report["ratios"]) >= set(report["targets"])
    assert report["setup"]["num_train"] == 48 and report["setup"]["device"] == "cpu"
    printed = capsys.readouterr().out
    assert "train (b) mmclf fast path" in printed and "targets" in printed

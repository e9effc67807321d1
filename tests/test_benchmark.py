"""The benchmarks run end to end at a smoke size: train_throughput.py reports every path, scaling.py
1 and 2 processes side by side."""
import importlib.util
import json
import sys

import mmcv.utils.progressbar  # noqa: F401  (see below)
import pytest

from tests.conftest import NARROW_MODEL, REPO

# mmcv's ProgressBar binds sys.stdout as its default file when mmcv is first imported. Imported here,
# at collection, that is pytest's session-long stream; first imported by a benchmark under a test's
# capsys, it would be that test's stream, closed before the next test trains and prints progress.


def load_benchmark(name="train_throughput"):
    """benchmarks/NAME.py as a module, its folder on sys.path as when it runs as a script (it imports its
    neighbours: publish.py, onnx_inference.py's set-up run)."""
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
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


@pytest.mark.slow
def test_scaling_benchmark_trains_on_1_and_2_processes_side_by_side(tmp_path, capsys):
    out = tmp_path / "scaling.json"
    report = load_benchmark("scaling").main(["--num-train", "256", "--batch", "32", "--epochs", "1", "--rounds", "1",
                                             "--out", str(out), *NARROW_MODEL])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert set(report["table"]) == {"1", "2"} and report["nproc"] == 2
    assert all(row["img_per_s"] > 0 and row["end_to_end_img_per_s"] > 0 for row in report["table"].values())
    assert report["scaling_efficiency"] == pytest.approx(
        report["table"]["2"]["img_per_s"] / (2 * report["table"]["1"]["img_per_s"]))
    assert "scaling efficiency on 2 processes" in capsys.readouterr().out


@pytest.mark.slow
def test_folder_data_benchmark_measures_both_paths_on_the_same_image_files(tmp_path, capsys):
    out = tmp_path / "folder_data.json"
    report = load_benchmark("folder_data").main(["--num-images", "60", "--batch", "16", "--rounds", "1",
                                                 "--epochs", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert set(report["results"]) == {"reference_w2", "reference_w0", "device"}
    assert all(entry["img_per_s"] > 0 and entry["end_to_end_img_per_s"] > 0 and entry["images"] == 60
               for entry in report["results"].values())
    assert report["ratio"] == report["results"]["device"]["img_per_s"] / report["results"]["reference_w2"]["img_per_s"]
    assert report["target"] == {"goal": 5.0, "met": report["ratio"] >= 5.0}
    cache = report["cache"]
    assert cache["seconds"] > 0 and cache["images_decoded"] == 60 + 10 and cache["splits"] == {"train": 60, "test": 10}
    assert cache["peak_rss_mib"] >= cache["baseline_rss_mib"] > 0 and cache["npy_mib"] > 0
    assert set(report["break_even"]) == {"epochs", "epochs_steady_state"}
    printed = capsys.readouterr().out
    assert "(b) mmclf decoded cache + device loader" in printed and "cache build" in printed and "target" in printed


@pytest.mark.slow
def test_cache_memory_benchmark_measures_1_and_2_processes_against_the_cache(tmp_path, capsys):
    out = tmp_path / "cache_memory.json"
    report = load_benchmark("cache_memory").main(["--num-images", "40", "--image-size", "64", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["cache_bytes"] == 40 * 72 * 72 * 3 + 128 and report["setup"]["stored_size"] == 72
    rounds = report["rounds"]
    assert [len(rounds[n]) for n in ("1", "2")] == [1, 2]
    assert len({r["checksum"] for r in rounds["1"] + rounds["2"]}) == 1, "every process read the same images"
    assert all(r["images"] == 40 and r["peak"] > 0 for r in rounds["1"] + rounds["2"])
    assert report["ratios"]["peak_over_cache"] == rounds["1"][0]["peak"] / report["cache_bytes"]
    assert report["targets"]["extra_rank_over_cache"]["goal"] == 0.1
    assert "per extra rank / cache" in capsys.readouterr().out


@pytest.mark.slow
def test_onnx_inference_benchmark_times_pytorch_and_onnxruntime_on_the_same_images(tmp_path, capsys):
    out = tmp_path / "onnx_inference.json"
    report = load_benchmark("onnx_inference").main(["--image-size", "16", "--num-images", "16", "--batches", "1", "8",
                                                    "--rounds", "1", "--out", str(out), *NARROW_MODEL])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert set(report["results"]) == {"1", "8"} and report["setup"]["image_size"] == 16
    for batch, entry in report["results"].items():
        assert entry["pytorch"]["img_per_s"] > 0 and entry["onnx"]["img_per_s"] > 0
        assert report["ratios"][batch] == entry["onnx"]["img_per_s"] / entry["pytorch"]["img_per_s"]
    assert 0 <= report["max_abs_diff"] <= 1e-3
    printed = capsys.readouterr().out
    assert "(b) onnxruntime: model.onnx" in printed and "max abs score difference" in printed


def test_startup_benchmark_times_compile_beside_the_bare_kfp_import(capsys):
    load_benchmark("startup").main(["--rounds", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in lines[1:4]] == ["import kfp, kfp.kubernetes", "mmclf --cfg job",
                                                           "mmclf backend=kfp (compile)"]
    ratio = float(lines[-1].split(": ")[1].split("x")[0])
    assert ratio > 1, "compiling imports kfp and more: never faster than the bare import"


def test_serve_benchmark_times_served_and_bare_onnxruntime_side_by_side(folder_run, tmp_path, capsys):
    out = tmp_path / "serve.json"
    report = load_benchmark("serve_throughput").main([
        "--run-dir", str(folder_run), "--clients", "2", "--requests", "2", "--rounds", "1", "--max-batch", "8",
        "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["img_per_s"]["served"] > 0 and report["img_per_s"]["alone"] > 0
    assert report["ratio"] == report["img_per_s"]["served"] / report["img_per_s"]["alone"]
    assert report["latency_one_image"]["beside_max_batch"]["large_request_s"] > 0
    assert "served / alone:" in capsys.readouterr().out

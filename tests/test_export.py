"""The export step: model.onnx (uint8 RGB images in, the test pipeline inside) and labels.txt, its parity
with PyTorch measured; and ``python -m mmclf.predict --onnx``."""
import json
import subprocess
import sys

import mmcv
import numpy as np
import pytest
from omegaconf import OmegaConf

from mmclf.deploy.predict import OnnxPredictor, Predictor, predict
from mmclf.errors import ExportError
from mmclf.reports.jobs import ONNX_METRICS
from mmclf.run.rundir import RunDir
from mmclf.steps import export as export_step
from mmclf.steps import run_step
from tests.conftest import REPO, compose_cfg, folder_overrides, tiny_overrides, write_image_folder
from tests.test_predict import predict_cli

RUNS = ["folder_run", "finished_run"]  # data=folder (3 classes, 16 px) and data=synthetic (10 classes, 16 px)
EXPORTED = ("model.onnx", "labels.txt", "smoke_test.npz", "export.json")


def decoded_test_split(run_dir):
    """The test split's decoded uint8 images and labels, as the test step scored them."""
    return export_step.test_split(OmegaConf.load(run_dir / "config.yaml"), RunDir(run_dir))


@pytest.mark.parametrize("run", RUNS)
def test_a_run_exports_its_model_and_labels_and_reports_their_parity(run, request):
    run_dir = request.getfixturevalue(run)
    predictions = json.loads((run_dir / "predictions.json").read_text())
    assert (run_dir / "labels.txt").read_text().splitlines() == predictions["classes"]
    figures = json.loads((run_dir / "export.json").read_text())
    assert figures["onnx_top1_agreement"] == 100.0 and figures["onnx_top1_accuracy_diff"] == 0.0
    assert figures["onnx_max_abs_score_diff"] <= 1e-3 and figures["test_images"] == len(predictions["gt_label"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {key: metrics[key] for key in ONNX_METRICS} == {key: figures[key] for key in ONNX_METRICS}
    assert "| onnx_top1_agreement | 100.00 |" in (run_dir / "report.md").read_text()


def test_the_smoke_test_file_holds_the_first_test_images_and_their_predicted_scores(folder_run):
    images, _ = decoded_test_split(folder_run)
    with np.load(folder_run / "smoke_test.npz") as kept:
        assert kept["images"].dtype == np.uint8 and np.array_equal(kept["images"], np.stack(images[:4]))
        scores = kept["scores"]
    assert np.allclose(scores, OnnxPredictor.of_run(RunDir(folder_run)).scores(images[:4]), atol=1e-6)
    predictions = json.loads((folder_run / "predictions.json").read_text())  # the test step's (PyTorch)
    assert scores.argmax(axis=1).tolist() == predictions["pred_label"][:4]
    assert scores.max(axis=1) == pytest.approx(predictions["pred_score"][:4], abs=1e-3)


@pytest.mark.parametrize("run", RUNS)
def test_onnxruntime_gives_pytorchs_scores_on_uint8_batches_of_any_size(run, request):
    run_dir = request.getfixturevalue(run)
    images, _ = decoded_test_split(run_dir)
    onnx = OnnxPredictor.of_run(RunDir(run_dir))
    torch_scores = Predictor(RunDir(run_dir), device="cpu").scores(images)
    for batch in (1, 5):  # the batch dimension is dynamic; 5 leaves a shorter last batch
        scores = np.vstack([onnx.scores(images[start:start + batch]) for start in range(0, len(images), batch)])
        assert np.abs(scores - torch_scores).max() <= 1e-3, f"batch {batch}"
        assert scores.argmax(axis=1).tolist() == json.loads((run_dir / "predictions.json").read_text())["pred_label"]
    assert images[0].dtype == np.uint8 and onnx.session.get_inputs()[0].type == "tensor(uint8)"


@pytest.mark.parametrize("size", [64, 100, 224])
def test_the_in_graph_resize_is_opencvs_to_the_bit(size):
    import torch

    from mmclf.deploy.onnx_graph import CvResize

    target = round(size * 256 / 224)  # the folder test pipeline's Resize from 64 px
    images = np.random.default_rng(size).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    ours = CvResize((size, size), (target, target))(torch.from_numpy(images).to(torch.int32)).numpy()
    expected = [mmcv.imresize(image, (target, target), interpolation="bilinear", backend="cv2") for image in images]
    assert np.array_equal(ours, np.stack(expected))


def test_an_imagenet_style_run_passes_parity_through_the_in_graph_resize_and_crop(tmp_path):
    from mmclf.task import run

    root = write_image_folder(tmp_path / "pets", per_split={"train": 4, "test": 4})
    run_dir, cfg = tmp_path / "run", compose_cfg([*folder_overrides(root), "data.image_size=64"])
    norm = OmegaConf.to_container(cfg.data.img_norm_cfg)  # a test pipeline of one's own: up from the 72 px square
    cfg.data.test_pipeline = [{"type": "Resize", "size": [80, -1]}, {"type": "CenterCrop", "crop_size": 64},
                              {"type": "Normalize", **norm}, {"type": "ImageToTensor", "keys": ["img"]},
                              {"type": "Collect", "keys": ["img"]}]
    run(cfg, run_dir)
    dumped = mmcv.Config.fromfile(str(run_dir / "work_dir/mmcls_config.py"))
    pipeline = [step["type"] for step in dumped.data.test.pipeline]
    assert pipeline[:3] == ["Resize", "CenterCrop", "Normalize"], "the pipeline this test is about"
    figures = json.loads((run_dir / "export.json").read_text())
    assert figures["onnx_top1_agreement"] == 100.0 and figures["onnx_max_abs_score_diff"] <= 1e-3


def test_export_off_writes_nothing_and_is_recorded_done(copy_of_finished_run, data_root):
    cfg, run_dir = compose_cfg([*tiny_overrides(data_root), "runtime.export.onnx=false"]), copy_of_finished_run
    run_step("export", cfg, run_dir)
    assert not any((run_dir / name).exists() for name in EXPORTED), "no model from an earlier export is left"
    assert "export" in json.loads((run_dir / "steps.json").read_text())
    run_step("metrics", cfg, run_dir)
    assert not set(ONNX_METRICS) & set(json.loads((run_dir / "metrics.json").read_text()))


def _corrupt_the_head(to_onnx):
    """``to_onnx`` whose graph has 1 added to the first class's bias: what a broken export looks like."""
    import onnx
    from onnx import numpy_helper

    def corrupted(predictor):
        model = onnx.load_from_string(to_onnx(predictor))
        (gemm,) = [node for node in model.graph.node if node.op_type == "Gemm"]
        (bias,) = [tensor for tensor in model.graph.initializer if tensor.name == gemm.input[2]]
        values = numpy_helper.to_array(bias).copy()
        values[0] += 1.0
        bias.CopyFrom(numpy_helper.from_array(values, bias.name))
        return model.SerializeToString()

    return corrupted


@pytest.mark.parametrize("broken", ["tolerance", "weights"])
def test_a_parity_failure_is_one_line_and_keeps_the_training_results(broken, copy_of_finished_run, data_root,
                                                                     monkeypatch):
    run_dir = copy_of_finished_run
    if broken == "tolerance":
        monkeypatch.setattr(export_step, "MAX_SCORE_DIFF", -1.0)
    else:
        monkeypatch.setattr(export_step, "to_onnx", _corrupt_the_head(export_step.to_onnx))
    kept = {name: (run_dir / name).read_bytes() for name in ("work_dir/epoch_1.pth", "eval_result.json",
                                                             "predictions.json")}
    with pytest.raises(ExportError) as err:
        export_step.export(compose_cfg(tiny_overrides(data_root)), RunDir(run_dir))
    assert "\n" not in str(err.value) and "does not give PyTorch's results on the 32 test images" in str(err.value)
    assert "runtime.export.onnx=false" in str(err.value)
    assert not any((run_dir / name).exists() for name in EXPORTED), "neither a new nor the earlier model is left"
    assert {name: (run_dir / name).read_bytes() for name in kept} == kept


def test_predict_onnx_gives_predicts_classes_without_torch_or_mmcls(folder_run, images):
    expected = list(predict(folder_run, [images / "test"], device="cpu", k=3))
    script = ("import json, sys\nfrom mmclf.deploy.predict import main\nmain(sys.argv[1:])\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mmcv', 'mmcls'))))\n")
    result = subprocess.run([sys.executable, "-c", script, str(folder_run), str(images / "test"), "--onnx", "--json",
                             "--top-k", "3"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    *lines, heavy = result.stdout.splitlines()
    assert json.loads(heavy) == [], "the ONNX path imports no torch, mmcv or mmcls"
    onnx = [json.loads(line) for line in lines]
    assert [r["path"] for r in onnx] == [r["path"] for r in expected]
    assert [r["top_k"][0]["class"] for r in onnx] == [r["top_k"][0]["class"] for r in expected]
    assert [r["top_k"][0]["score"] for r in onnx] == pytest.approx([r["top_k"][0]["score"] for r in expected],
                                                                   abs=1e-5)


def test_predict_onnx_refuses_a_run_without_model_onnx(copy_of_finished_run, images):
    (copy_of_finished_run / "model.onnx").unlink()
    result = predict_cli(copy_of_finished_run, images / "test/cat/0.png", "--onnx")
    errors = [line for line in result.stderr.splitlines() if line.startswith("mmclf: error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "no model.onnx" in errors[0] and "predict without --onnx" in errors[0]

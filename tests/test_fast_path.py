"""The fast path (data.loader=device): mmcls's augmentation semantics on the device, batches in
mmcls's form, the perf switches, schedule=fast, and training to the reference path's accuracy."""
import importlib
import itertools
import random
from dataclasses import replace

import mmcv
import numpy as np
import pytest
import torch
from mmcls.datasets import build_dataset
from mmcls.datasets.pipelines import Compose
from mmcls.models import build_classifier
from mmcv.parallel import is_module_wrapper
from mmcv.runner import epoch_based_runner
from omegaconf import OmegaConf

from mmclf.data import sources
from mmclf.errors import ConfigError
from mmclf.models.config import to_mmcv_config
from mmclf.reports.report import read_log
from mmclf.run.io import read_json
from mmclf.setup_env import register_all_modules
from mmclf.task import run
from mmclf.training import fast
from mmclf.training.fast import runner as fast_runner
from mmclf.training.fast.augment import Augment, parse_pipeline
from mmclf.training.fast.device_loader import DeviceLoader
from mmclf.training.fast.precision import DEFAULTS, AutocastModel, Perf, prepare_model, resolve_perf
from tests.conftest import compose_cfg, tiny_overrides

SIDE, PAD = 6, 2
# Every pixel value distinct and non-zero, so a crop (zero padding included) and a flip can be
# read back from the output.
CODED = (np.arange(SIDE * SIDE * 3).reshape(SIDE, SIDE, 3) + 1).astype(np.uint8)
RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "to_rgb": False}  # normalisation that keeps pixel values


def pipeline(name: str) -> list:
    return OmegaConf.to_container(compose_cfg([f"data={name}"]).data.train_pipeline, resolve=True)


def mmcls_candidates(padding: int) -> dict:
    """Every output mmcls's RandomCrop + RandomFlip can make of CODED, by (top, left, flipped),
    built with the mmcv functions those transforms call."""
    padded = mmcv.impad(CODED, padding=padding, pad_val=0)
    outputs = {}
    for top, left in itertools.product(range(2 * padding + 1), repeat=2):
        crop = mmcv.imcrop(padded, np.array([left, top, left + SIDE - 1, top + SIDE - 1]))
        outputs[(top, left, False)] = crop
        outputs[(top, left, True)] = mmcv.imflip(crop, direction="horizontal")
    return outputs


def identify(samples: np.ndarray, candidates: dict) -> list:
    """The (top, left, flipped) of each (N, H, W, C) sample; each must match exactly one candidate."""
    keys = list(candidates)
    stacked = np.stack([candidates[key] for key in keys])
    matches = (samples[:, None] == stacked[None]).all(axis=(2, 3, 4))
    assert (matches.sum(axis=1) == 1).all(), "a sample is not an output mmcls's pipeline can make"
    return [keys[i] for i in matches.argmax(axis=1)]


def device_samples(augment: Augment, count: int, seed: int = 0) -> np.ndarray:
    loader = DeviceLoader(np.repeat(CODED[None], count, axis=0), np.zeros(count), augment,
                          batch_size=1000, device="cpu", seed=seed)
    images = torch.cat([batch["img"] for batch in loader])
    return images.permute(0, 2, 3, 1).round().to(torch.uint8).numpy()


def mmcls_samples(steps: list, count: int) -> np.ndarray:
    random.seed(0)
    np.random.seed(0)
    transform = Compose(steps)
    return np.stack([transform({"img": CODED.copy()})["img"] for _ in range(count)])


def assert_uniform(counts: dict, values, total: int) -> None:
    expected = total / len(values)
    for value in values:
        assert abs(counts.get(value, 0) - expected) < 5 * expected ** 0.5, (value, counts)


def test_pipelines_are_read_from_each_data_config():
    cifar10, digits, synthetic = (parse_pipeline(pipeline(name)) for name in ("cifar10", "digits", "synthetic"))
    assert (cifar10.crop_size, cifar10.padding, cifar10.flip_prob) == ((32, 32), 4, 0.5)
    assert cifar10.mean == tuple(compose_cfg().data.img_norm_cfg.mean) and cifar10.to_rgb is False
    assert (digits.padding, digits.flip_prob) == (2, 0.0)  # no flip: mirrored digits are not digits
    assert (synthetic.padding, synthetic.flip_prob) == (2, 0.5)


def test_crops_and_flips_are_mmcls_outputs_with_mmcls_distribution():
    count = 4000
    augment = Augment(**RAW, crop_size=(SIDE, SIDE), padding=PAD, flip_prob=0.5)
    candidates = mmcls_candidates(PAD)
    ours = identify(device_samples(augment, count), candidates)
    reference = identify(mmcls_samples([dict(type="RandomCrop", size=SIDE, padding=PAD),
                                        dict(type="RandomFlip", flip_prob=0.5)], count), candidates)
    for drawn in (ours, reference):
        offsets = range(2 * PAD + 1)
        for axis in (0, 1):  # top, left: uniform over every position of the padded image
            column = [key[axis] for key in drawn]
            assert_uniform({v: column.count(v) for v in offsets}, offsets, count)
        flips = sum(key[2] for key in drawn)
        assert abs(flips - count / 2) < 5 * (count / 4) ** 0.5
        # the offsets are independent of each other and of the flip
        assert_uniform({k: drawn.count(k) for k in set(drawn)}, list(candidates), count)


def test_digits_pipeline_pads_by_2_and_never_flips():
    augment = replace(parse_pipeline(pipeline("digits")), **RAW, crop_size=(SIDE, SIDE))
    drawn = identify(device_samples(augment, 500), mmcls_candidates(2))
    assert not any(key[2] for key in drawn)
    assert {key[0] for key in drawn} == set(range(5))


@pytest.mark.parametrize("to_rgb", [False, True])
def test_normalisation_is_within_one_float32_step_of_mmcls_and_predicts_the_same(to_rgb):
    # mmcls's Normalize is OpenCV's multiply by 1/std, whose kernel depends on OpenCV's version and the
    # CPU: by 1/std rounded to float32, as the device loader does (every value equal), or in float64
    # (a quarter of the values one float32 step away). What holds on every CPU:
    images = np.random.default_rng(0).integers(0, 256, size=(64, 8, 8, 3), dtype=np.uint8)
    norm = dict(compose_cfg().data.img_norm_cfg, to_rgb=to_rgb)  # cifar10's mean and std
    steps = [dict(type="Normalize", **norm), dict(type="ImageToTensor", keys=["img"])]
    expected = torch.stack([Compose(steps)({"img": img})["img"] for img in images])
    loader = DeviceLoader(images, np.zeros(len(images)), Augment(**norm), batch_size=64, device="cpu", seed=0)
    ours = loader.augment(torch.arange(len(images)))
    np.testing.assert_array_max_ulp(ours.numpy(), expected.numpy(), maxulp=1)
    model = small_model().eval()
    with torch.no_grad():
        assert torch.equal(model(ours, return_loss=False, post_process=False).argmax(1),
                           model(expected, return_loss=False, post_process=False).argmax(1))


@pytest.mark.parametrize("channels_last", [False, True])
def test_batches_have_mmcls_form_and_each_epoch_is_a_permutation(channels_last):
    images = np.random.default_rng(0).integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    augment = replace(parse_pipeline(pipeline("synthetic")), crop_size=(8, 8))
    loader = DeviceLoader(images, np.arange(10), augment, batch_size=4, device="cpu", seed=0,
                          channels_last=channels_last)
    assert len(loader) == 3
    epochs = [list(loader) for _ in range(2)]
    for batches in epochs:
        assert [len(b["gt_label"]) for b in batches] == [4, 4, 2]  # the short last batch is kept, as in mmcls
        for batch in batches:
            assert batch["img"].shape == (len(batch["gt_label"]), 3, 8, 8) and batch["img"].dtype == torch.float32
            assert batch["gt_label"].dtype == torch.int64
            layout = torch.channels_last if channels_last else torch.contiguous_format
            assert batch["img"].is_contiguous(memory_format=layout)
        assert sorted(torch.cat([b["gt_label"] for b in batches]).tolist()) == list(range(10))
    orders = [torch.cat([b["gt_label"] for b in batches]).tolist() for batches in epochs]
    assert orders[0] != orders[1]


@pytest.mark.parametrize("steps, message", [
    ([{"type": "ColorJitter", "brightness": 0.4}], "ColorJitter has no device version"),
    ([{"type": "Normalize", "mean": [0] * 3, "std": [1] * 3}, {"type": "RandomCrop", "size": 8, "padding": 2}],
     "then Normalize"),
    ([{"type": "RandomCrop", "size": 8, "padding": 2, "padding_mode": "reflect"}], "constant padding"),
    ([{"type": "RandomFlip", "flip_prob": 0.5}], "needs a Normalize step"),
])
def test_unsupported_pipelines_point_to_the_mmcls_loader(steps, message):
    with pytest.raises(ConfigError, match=message):
        parse_pipeline(steps)


def test_loader_choice_is_checked():
    assert fast.uses_device_loader(compose_cfg(["data.loader=device"]).data)
    assert not fast.uses_device_loader(compose_cfg().data)
    with pytest.raises(ConfigError, match="data.loader='gpu'"):
        fast.uses_device_loader(compose_cfg(["data.loader=gpu"]).data)


def test_perf_defaults_keep_cpu_results_and_speed_up_gpus(monkeypatch):
    assert dict(compose_cfg().runtime.perf) == DEFAULTS  # the yaml and the code agree
    assert resolve_perf(None, "cpu") == Perf(None, channels_last=False, cudnn_benchmark=True, compile=False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_perf(DEFAULTS, "cuda") == Perf(torch.bfloat16, channels_last=True, cudnn_benchmark=True,
                                                  compile=False)
    assert resolve_perf({"autocast": "bf16", "channels_last": True}, "cpu").autocast_dtype == torch.bfloat16
    for bad, message in [({"autocast": "fp16"}, "autocast='fp16'"), ({"compile": "yes"}, "compile='yes'"),
                         ({"channels_last": 1}, "channels_last=1"), ({"speed": True}, "unknown key")]:
        with pytest.raises(ConfigError, match=message):
            resolve_perf(bad, "cpu")


def test_config_switches_compose(tmp_path):
    cfg = compose_cfg(["schedule=fast", "data=digits", "data.loader=device", "schedule.optimizer.lr=0.2",
                       "runtime.perf.autocast=bf16", "runtime.perf.channels_last=true", "runtime.perf.compile=true"])
    mm_cfg = to_mmcv_config(cfg, tmp_path)
    assert mm_cfg.perf == {"autocast": "bf16", "channels_last": True, "cudnn_benchmark": True, "compile": True}
    assert "loader" not in mm_cfg.data  # mmclf's key: mmcls never sees it
    assert mm_cfg.data.samples_per_gpu == 512 and mm_cfg.train_pipeline[0]["padding"] == 2  # digits' own pipeline
    assert mm_cfg.optimizer.nesterov and mm_cfg.lr_config.policy == "OneCycle" and mm_cfg.lr_config.max_lr == 0.2
    assert mm_cfg.momentum_config.policy == "OneCycle"
    assert mm_cfg.model.head.loss == {"type": "LabelSmoothLoss", "label_smooth_val": 0.1, "loss_weight": 1.0}
    plain = to_mmcv_config(compose_cfg(), tmp_path)
    assert plain.model.head.loss.type == "CrossEntropyLoss" and plain.data.samples_per_gpu == 128


def small_model():
    model_cfg = OmegaConf.to_container(compose_cfg(["data=synthetic"]).model, resolve=True)
    return build_classifier(model_cfg)


def test_prepare_model_applies_layout_compile_and_autocast():
    model = prepare_model(small_model(), "cpu", Perf(torch.bfloat16, channels_last=True, cudnn_benchmark=True,
                                                     compile=True))
    assert isinstance(model, AutocastModel) and is_module_wrapper(model)  # checkpoints save model.module
    assert model.module.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.module.backbone._compiled_call_impl is not None  # compiled in place: state_dict keys unchanged
    assert not any(key.startswith("_orig_mod") for key in model.module.state_dict())


def test_autocast_runs_the_forward_in_bf16():
    model = prepare_model(small_model(), "cpu", Perf(torch.bfloat16, False, True, False))
    seen = []
    model.module.backbone.conv1.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    batch = {"img": torch.randn(4, 3, 8, 8), "gt_label": torch.tensor([0, 1, 2, 3])}
    outputs = model.train_step(batch, None)
    outputs["loss"].backward()
    assert seen == [torch.bfloat16] and torch.isfinite(outputs["loss"])


def test_fast_train_model_runs_schedule_fast_with_mmcv_hooks_and_no_idle_pause(tmp_path, data_root, monkeypatch):
    # 8 iterations: mmcv's OneCycle needs pct_start * iterations > 1
    cfg = compose_cfg([*tiny_overrides(data_root), "data.image_size=8", "schedule=fast",
                       "data.samples_per_gpu=16", "schedule.runner.max_epochs=2"])
    sources.prepare(cfg.data)
    register_all_modules()  # the train step's own first call: this test builds the dataset without it
    mm_cfg = to_mmcv_config(cfg, tmp_path)
    pauses = []
    monkeypatch.setattr(epoch_based_runner.time, "sleep", pauses.append)
    model, dataset = build_classifier(mm_cfg.model), build_dataset(mm_cfg.data.train)
    runner = fast_runner.train_model(model, [dataset], mm_cfg, meta={})
    assert pauses == []  # none per epoch, none waiting for loggers at the end of run()
    assert (runner.epoch, runner.iter) == (2, 8)
    assert runner.current_lr()[0] < 0.4 / 25  # mmcv's OneCycle ran to its end
    assert runner.model.module.head.compute_loss.__class__.__name__ == "LabelSmoothLoss"
    saved = torch.load(tmp_path / "work_dir" / "epoch_2.pth", weights_only=True)
    assert set(saved["state_dict"]) == set(small_model().state_dict())  # mmcls's keys: the test step loads them


def test_the_device_loader_takes_runners_that_keep_mmcvs_loop_and_refuses_the_others():
    from mmcv.runner import RUNNERS, EpochBasedRunner, IterBasedRunner

    from mmclf.training.checkpoints import NoIdlePause, SafeEpochBasedRunner

    assert fast_runner.device_runner_class("SafeEpochBasedRunner") is SafeEpochBasedRunner
    device_runner = fast_runner.device_runner_class("EpochBasedRunner")
    assert issubclass(device_runner, NoIdlePause) and issubclass(device_runner, EpochBasedRunner)

    class OwnRun(EpochBasedRunner):
        def run(self, data_loaders, workflow, max_epochs=None, **kwargs):
            raise AssertionError("never called: NoIdlePause's run would replace it")

    RUNNERS.register_module(name="OwnRunForTheTest", module=OwnRun, force=True)
    for refused in ("OwnRunForTheTest", IterBasedRunner.__name__, "NoSuchRunner"):
        with pytest.raises(ConfigError, match=f"schedule.runner.type={refused}: data.loader=device runs"):
            fast_runner.device_runner_class(refused)


def test_device_loader_run_end_to_end(tmp_path, data_root, monkeypatch):
    train_step = importlib.import_module("mmclf.steps.train")  # the module: mmclf.steps.train is also a function

    calls = []
    real = train_step.device_train_model
    monkeypatch.setattr(train_step, "device_train_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    metrics = run(compose_cfg([*tiny_overrides(data_root), "data.loader=device"]), tmp_path / "run")
    assert calls == [1], "data.loader=device must train through the fast path"
    assert 0 <= metrics <= 100
    assert read_json(tmp_path / "run" / "val_result.json")["accuracy_top-1"] == metrics
    (val,) = read_log(tmp_path / "run" / "work_dir", "val")  # per-epoch validation on this loader too
    assert val["accuracy_top-1"] == pytest.approx(metrics, abs=1e-5)  # mmcv's json log rounds to 5 decimals


@pytest.mark.slow
def test_fast_path_trains_synthetic_as_well_as_the_reference(tmp_path, data_root):
    # data.val_fraction=0: all 256 images train (this compares loaders; nothing is chosen on the split)
    overrides = [*tiny_overrides(data_root), "data.num_classes=4", "data.num_train=256", "data.num_test=64",
                 "data.val_fraction=0",
                 "schedule.runner.max_epochs=3", "data.samples_per_gpu=32"]
    run(compose_cfg([*overrides, "data.loader=mmcls"]), tmp_path / "mmcls")
    run(compose_cfg([*overrides, "data.loader=device"]), tmp_path / "device")
    reference, device = (read_json(tmp_path / path / "metrics.json")["test_accuracy_top-1"]
                         for path in ("mmcls", "device"))
    assert reference >= 90 and device >= 90, (reference, device)
    assert abs(reference - device) <= 10, (reference, device)

"""model=zoo and model.pretrained through the whole run: a zoo model trains on your own images, and a
second run fine-tunes from the first one's checkpoint (backbone loaded, head new for other classes)."""
import json

import pytest
import torch

from mmclf.errors import ConfigError
from mmclf.models.config import to_mmcv_config
from mmclf.run.rundir import RunDir
from mmclf.steps.prepare_data import prepare_data
from mmclf.task import run
from mmclf.validate import validate
from tests.conftest import compose_cfg, write_image_folder

# mmcls's ImageNet ResNet-18 from its zoo config, 8 channels wide: the same code, a fraction of the work.
ZOO_NARROW = ["model=zoo", "model.config=resnet/resnet18_8xb32_in1k", "+model.backbone.stem_channels=8",
              "+model.backbone.base_channels=8", "+model.head.in_channels=64"]


def overrides(root):
    # data.loader=device: a zoo model on the fast path too (and without mmcv's 2-second pause per epoch)
    return ["data=folder", f"data.root={root}", "data.image_size=32", "data.loader=device", "data.workers_per_gpu=0",
            "data.persistent_workers=false", "schedule=quick", "schedule.runner.max_epochs=1",
            "runtime.log_config.interval=1", "device=cpu", *ZOO_NARROW]


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory):
    root = write_image_folder(tmp_path_factory.mktemp("zoo") / "pets")
    run_dir = tmp_path_factory.mktemp("zoo-run") / "run"
    run(compose_cfg(overrides(root)), run_dir)
    return run_dir


def test_a_zoo_model_trains_on_a_folder_with_the_head_sized_by_the_data(zoo_run):
    metrics = json.loads((zoo_run / "metrics.json").read_text())
    assert list(metrics["per_class_accuracy"]) == ["cat", "dog", "owl"]
    dumped = (zoo_run / "work_dir/mmcls_config.py").read_text()
    assert "'type': 'ResNet'" in dumped or "type='ResNet'" in dumped
    checkpoint = torch.load(zoo_run / "work_dir/latest.pth", map_location="cpu", weights_only=True)
    assert checkpoint["state_dict"]["head.fc.weight"].shape == (3, 64)


def test_fine_tuning_loads_the_backbone_and_trains_a_new_head(zoo_run, tmp_path, caplog):
    root = write_image_folder(tmp_path / "birds", classes=("crow", "gull"))
    cfg = compose_cfg([*overrides(root), f"model.pretrained={zoo_run / 'work_dir/latest.pth'}"])
    prepare_data(cfg, RunDir(tmp_path / "probe"))  # finds the two classes
    mm_cfg = to_mmcv_config(cfg, tmp_path / "probe")
    assert mm_cfg.model.backbone.init_cfg == {"type": "Pretrained", "prefix": "backbone", "map_location": "cpu",
                                              "checkpoint": str(zoo_run / "work_dir/latest.pth")}
    from mmcls.models import build_classifier

    model = build_classifier(mm_cfg.model)
    model.init_weights()
    source = torch.load(zoo_run / "work_dir/latest.pth", map_location="cpu", weights_only=True)["state_dict"]
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, source[f"backbone.{key}"]), key
    assert model.head.fc.weight.shape == (2, 64)
    caplog.set_level("INFO")
    run(cfg, tmp_path / "run")
    loaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pretrained: backbone loaded")]
    assert len(loaded) == 1 and "0 not in the checkpoint" in loaded[0], loaded
    assert "the head's 2 tensors are trained from scratch" in loaded[0]


def test_a_zoo_model_that_cannot_train_here_is_refused_before_any_work(tmp_path):
    # LeNet-5 takes one input channel: no image size helps (test_zoo.py has Swin at 32 px, which 224 px helps)
    cfg = compose_cfg(["data=synthetic", f"data.root={tmp_path}", "model=zoo", "model.config=lenet/lenet5_mnist"])
    with pytest.raises(ConfigError, match=r"^model\.config=lenet/lenet5_mnist: this model cannot train here at "
                                          r"data\.image_size=16 \(RuntimeError"):
        validate(cfg)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_pretrained_file_is_refused_in_one_line(tmp_path):
    result_cfg = compose_cfg(["data=synthetic", f"data.root={tmp_path}", "model.pretrained=/nowhere/x.pth"])
    from backends.local import LocalBackend

    with pytest.raises(ConfigError, match=r"model\.pretrained=/nowhere/x\.pth: no such checkpoint file here"):
        LocalBackend().check(result_cfg)

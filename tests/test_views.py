"""From 64 px your own images are stored with their aspect ratio kept, so the run's test view is mmcls's
own ImageNet-style file pipeline, ``LoadImageFromFile -> Resize((cache_size, -1)) -> CenterCrop``, on
the same files: the same pixels, and a trained checkpoint's same classes and scores."""
import json

import numpy as np
import pytest
from PIL import Image

from mmclf.data import image_cache
from mmclf.data.views import check_cache_size, default_cache_size, stored_size
from mmclf.errors import ConfigError
from tests.conftest import compose_cfg, folder_overrides, write_image_folder

MAX_PIXEL_DIFF = 2  # the two sides decode through their own builds of libjpeg, libpng, libwebp: allowed, not seen


def write_photos(folder, sizes=((640, 480), (333, 500), (1024, 300), (256, 256), (255, 700))):
    """Smooth random photos of the given (width, height), as JPEG and PNG: landscape, portrait, square."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for n, (width, height) in enumerate(sizes):
        image = Image.fromarray(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8))
        image = image.resize((width, height), Image.BICUBIC)
        image.save(folder / f"photo{n}.jpg", quality=90)
        image.save(folder / f"photo{n}.png")


def mmcls_file_pipeline(stored: int, crop: int, *rest):
    from mmcls.datasets.pipelines import Compose

    return Compose([{"type": "LoadImageFromFile"}, {"type": "Resize", "size": (stored, -1)},
                    {"type": "CenterCrop", "crop_size": crop}, *rest])


def test_the_stored_size_is_about_256_224_of_the_crop_with_a_margin_a_multiple_of_4():
    assert [default_cache_size(size) for size in (64, 96, 224, 384)] == [72, 108, 256, 440]
    folder = compose_cfg(folder_overrides("/data", "/cache") + ["data.image_size=224"]).data
    assert stored_size(folder) == 256
    chosen = compose_cfg(folder_overrides("/data") + ["data.image_size=224", "data.cache_size=288"]).data
    assert stored_size(chosen) == 288
    assert stored_size(compose_cfg(folder_overrides("/data")).data) == 16, "below 64 px: the square itself"
    for bad, shown in (("250", "250"), ("224", "224"), ("big", "'big'")):
        with pytest.raises(ConfigError, match=rf"^data.cache_size={shown}: .* above data.image_size=224 by a "
                                              r"multiple of 4 .* e.g. data.cache_size=256$"):
            check_cache_size(compose_cfg(folder_overrides("/data") + ["data.image_size=224",
                                                                       f"data.cache_size={bad}"]).data)
    with pytest.raises(ConfigError, match="applies from data.image_size=64"):
        check_cache_size(compose_cfg(folder_overrides("/data") + ["data.cache_size=36"]).data)


@pytest.mark.parametrize("image_size", [64, 224])
def test_the_cached_test_view_is_mmcls_file_pipeline_to_the_pixel(tmp_path, image_size):
    root = write_image_folder(tmp_path / "pets", per_split={"train": 2, "test": 6})  # 12-40 px, every format and mode
    write_photos(root / "test" / "cat")
    cfg = compose_cfg([*folder_overrides(root), f"data.image_size={image_size}"])
    manifest = image_cache.prepare(cfg.data)
    images, _, files = image_cache.load_split(manifest, "test")
    stored = stored_size(cfg.data)
    assert manifest["stored_size"] == stored and images[0].shape == (stored, stored, 3)
    margin = (stored - image_size) // 2  # the run's CenterCrop of image_size from the stored square
    theirs = mmcls_file_pipeline(stored, image_size)
    worst = {}
    for image, name in zip(images, files, strict=True):
        reference = theirs({"img_info": {"filename": str(root / name)}, "img_prefix": None})["img"][..., ::-1]  # BGR
        ours = image[margin:margin + image_size, margin:margin + image_size]
        suffix = name.rsplit(".", 1)[1]
        worst[suffix] = max(worst.get(suffix, 0), int(np.abs(ours.astype(int) - reference).max()))
    assert set(worst) == {"png", "jpg", "bmp", "webp", "tif"} and len(files) == 28
    assert max(worst.values()) <= MAX_PIXEL_DIFF, f"largest pixel difference per format: {worst}"


def test_a_checkpoint_tested_through_mmcls_file_pipeline_gives_the_runs_own_predictions(tmp_path):
    import torch

    from mmclf.deploy.predict import Predictor, predict
    from mmclf.run.rundir import RunDir
    from mmclf.task import run

    root = write_image_folder(tmp_path / "pets", per_split={"train": 6, "test": 4})
    write_photos(root / "test" / "owl", sizes=((200, 120), (90, 160)))
    run_dir = tmp_path / "run"
    run(compose_cfg([*folder_overrides(root), "data.image_size=64"]), run_dir)
    expected = json.loads((run_dir / "predictions.json").read_text())
    predictor = Predictor(RunDir(run_dir), "cpu")
    norm = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "to_rgb": True}  # mmcls reads BGR
    theirs = mmcls_file_pipeline(72, 64, {"type": "Normalize", **norm}, {"type": "ImageToTensor", "keys": ["img"]},
                                 {"type": "Collect", "keys": ["img"]})
    batch = torch.stack([theirs({"img_info": {"filename": str(root / name)}, "img_prefix": None})["img"]
                         for name in expected["files"]])
    with torch.no_grad():
        scores = np.vstack(predictor.model(img=batch, return_loss=False))
    assert len(expected["files"]) == 16
    assert scores.argmax(1).tolist() == expected["pred_label"], "top-1 agreement 100%"
    assert scores.max(1) == pytest.approx(expected["pred_score"], abs=1e-5)
    for onnx in (False, True):  # mmclf.predict decodes new files as the cache stored them
        results = list(predict(run_dir, [root / "test"], device="cpu", k=1, onnx=onnx))
        assert [r["path"] for r in results] == [str(root / name) for name in expected["files"]]
        assert [expected["classes"].index(r["top_k"][0]["class"]) for r in results] == expected["pred_label"], onnx


def test_a_cache_size_that_would_shift_the_crop_is_refused_before_any_work(tmp_path):
    from mmclf.validate import validate

    root = write_image_folder(tmp_path / "pets", per_split={"train": 2, "test": 1})
    with pytest.raises(ConfigError, match=r"^data.cache_size=258: must be null"):
        validate(compose_cfg([*folder_overrides(root), "data.image_size=224", "data.cache_size=258"]))
    assert not (root / ".mmclf_cache").exists(), "nothing decoded"


def test_a_cache_of_the_earlier_squashed_layout_is_rebuilt_not_read(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "pets", per_split={"train": 2, "test": 1})
    cfg = compose_cfg([*folder_overrides(root), "data.image_size=64"])
    monkeypatch.setattr(image_cache, "CACHE_VERSION", 1)  # as the squashed layout named its files
    earlier = image_cache.prepare(cfg.data)["splits"]["test"]["cache"]
    monkeypatch.undo()
    current = image_cache.prepare(cfg.data)["splits"]["test"]["cache"]
    assert current != earlier and image_cache.CACHE_VERSION == 2, "another file: the earlier one is never read"

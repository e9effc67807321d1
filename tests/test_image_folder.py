"""Your own images (data=folder): scanning, decoding, the cache, unreadable files, the validation split."""
import json
import multiprocessing
import os

import numpy as np
import pytest
from PIL import Image

from mmclf.data import image_cache, image_folder
from mmclf.data.splits import stratified_holdout
from mmclf.errors import DataError
from tests.conftest import compose_cfg, folder_overrides, write_image_folder


def data_cfg(root, *extra):
    return compose_cfg([*folder_overrides(root), *extra]).data


@pytest.fixture
def images(tmp_path):
    return write_image_folder(tmp_path / "pets")


def test_classes_are_train_folders_sorted_and_clutter_is_skipped_and_counted(images, caplog):
    (images / "train/.DS_Store").write_bytes(b"\0")
    (images / "train/cat/._0.png").write_bytes(b"mac resource fork")
    (images / "train/cat/notes.txt").write_text("not an image")
    (images / "train/empty").mkdir()
    (images / "train/dog/nested").mkdir()
    Image.new("RGB", (9, 9)).save(images / "train/dog/nested/deep.JPG")  # recursive, any case of suffix
    classes, listings, skipped = image_folder.scan(data_cfg(images))
    assert classes == ["cat", "dog", "owl"]
    assert skipped == {"hidden": 2, "non-image": 1, "empty class folder": 1}
    assert "train/dog/nested/deep.JPG" in listings["train"].files
    assert len(listings["train"].files) == 37 and len(listings["test"].files) == 18 and "val" not in listings
    caplog.set_level("INFO")
    image_cache.prepare(data_cfg(images))
    assert "skipped 1 empty class folder, 2 hidden, 1 non-image" in caplog.text


def test_data_classes_fix_another_order_from_a_list_or_a_file(images):
    classes, listings, _ = image_folder.scan(data_cfg(images, "data.classes=[owl,cat,dog]"))
    assert classes == ["owl", "cat", "dog"]
    first_cat = listings["train"].files.index("train/cat/0.png")
    assert listings["train"].labels[first_cat] == 1
    (images / "names.txt").write_text("dog\nowl\ncat\n")
    assert image_folder.scan(data_cfg(images, "data.classes=names.txt"))[0] == ["dog", "owl", "cat"]
    with pytest.raises(DataError, match="train/owl: a class folder that data.classes does not list"):
        image_folder.scan(data_cfg(images, "data.classes=[cat,dog]"))


def test_a_test_or_val_class_that_train_lacks_is_named(images):
    write_image_folder(images, classes=("bat",), per_split={"val": 2})
    with pytest.raises(DataError, match=r"val/bat: class 'bat' is not a class of train/ \(cat, dog, owl\)"):
        image_folder.scan(data_cfg(images))


@pytest.mark.parametrize("keep_aspect", [False, True])
def test_every_mode_and_size_becomes_square_rgb(tmp_path, keep_aspect):
    modes = {"L": 100, "RGBA": (10, 20, 30, 0), "P": 5, "RGB": (1, 2, 3), "I;16": 40, "CMYK": (0, 0, 0, 0)}
    for mode, colour in modes.items():
        path = tmp_path / f"{mode.replace(';', '')}.{'tif' if mode in ('I;16', 'CMYK') else 'png'}"
        Image.new(mode, (50, 17), colour).save(path)
        decoded = image_folder.decode(path, 24, keep_aspect)
        assert decoded.shape == (24, 24, 3) and decoded.dtype == np.uint8, mode
    assert image_folder.decode(tmp_path / "RGB.png", 24, keep_aspect)[0, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("keep_aspect", [False, True])
def test_exif_orientation_is_applied_as_phones_mean_it(tmp_path, keep_aspect):
    pixels = np.zeros((10, 40, 3), np.uint8)
    pixels[:, :20] = 255  # white left half of a wide image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": a phone held upright
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    decoded = image_folder.decode(tmp_path / "phone.jpg", 40, keep_aspect)  # kept: the centre of 40x160
    assert decoded[:15].mean() > 200 and decoded[-15:].mean() < 50, "upright: the white half on top"


def corrupt(images):
    """A truncated JPEG, a PNG with garbage inside, and a text file named .jpg."""
    whole = (images / "train/cat/1.jpg").read_bytes()
    (images / "train/cat/1.jpg").write_bytes(whole[: len(whole) // 2])
    png = bytearray((images / "train/dog/0.png").read_bytes())
    png[60:90] = b"\xff" * 30
    (images / "train/dog/0.png").write_bytes(bytes(png))
    (images / "test/owl/fake.jpg").write_text("not a jpeg")
    return ["train/cat/1.jpg", "train/dog/0.png", "test/owl/fake.jpg"]


def test_unreadable_images_are_listed_once_before_training(images):
    bad = corrupt(images)
    with pytest.raises(DataError) as err:
        image_cache.prepare(data_cfg(images))
    message = str(err.value)
    assert message.startswith("3 image file(s) cannot be read") and "data.skip_bad_images=true" in message
    assert all(str(images / name) in message for name in bad)
    manifest = image_cache.prepare(data_cfg(images, "data.skip_bad_images=true"))
    assert manifest["splits"]["train"]["skipped_unreadable"] == 2 and manifest["splits"]["train"]["images"] == 34
    test_images, _, files = image_cache.load_split(manifest, "test")
    assert len(test_images) == 18 and "test/owl/fake.jpg" not in files


def test_the_message_names_five_paths_and_the_total(images):
    for n in range(7):
        (images / f"train/cat/broken{n}.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"^7 image file\(s\).*broken4.png and 2 more;"):
        image_cache.prepare(data_cfg(images))


def test_the_cache_is_reused_and_rebuilt_when_a_file_or_the_size_changes(images):
    manifest = image_cache.prepare(data_cfg(images))
    cache = json_path = manifest["splits"]["train"]["cache"]
    stamp = os.stat(cache).st_mtime_ns
    assert image_cache.prepare(data_cfg(images))["splits"]["train"]["cache"] == cache
    assert os.stat(cache).st_mtime_ns == stamp, "an unchanged folder is not decoded again"
    Image.new("RGB", (20, 20), (255, 0, 0)).save(images / "train/cat/0.png")  # same name, new content
    changed = image_cache.prepare(data_cfg(images))
    assert changed["splits"]["train"]["cache"] != json_path
    row = image_cache.load_split(changed, "train")[2].index("train/cat/0.png")
    assert image_cache.load_split(changed, "train")[0][row].reshape(-1, 3).mean(0).tolist() == [255, 0, 0]
    assert changed["splits"]["test"]["cache"] == manifest["splits"]["test"]["cache"], "test/ did not change"
    resized = image_cache.prepare(data_cfg(images, "data.image_size=20"))
    assert image_cache.load_split(resized, "test")[0][0].shape == (20, 20, 3)


def _prepare_in_child(root, queue):
    queue.put(image_cache.prepare(data_cfg(root))["splits"]["train"]["cache"])


def test_two_runs_preparing_one_root_at_once_share_one_cache(images):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    children = [context.Process(target=_prepare_in_child, args=(images, queue)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    assert [child.exitcode for child in children] == [0, 0]
    caches = {queue.get(timeout=5), queue.get(timeout=5)}
    assert len(caches) == 1
    assert len(list((images / ".mmclf_cache").glob("train-*.npy"))) == 1
    assert not list((images / ".mmclf_cache").glob(".*.tmp"))


def test_annotation_lists_name_files_outside_class_folders(tmp_path):
    root = write_image_folder(tmp_path / "flat", classes=("a", "b"))
    lines = [f"{path.relative_to(root)} {0 if '/a/' in str(path) else 1}" for path in sorted(root.rglob("*.*"))]
    (root / "train.txt").write_text("\n".join(line for line in lines if line.startswith("train")) + "\n")
    (root / "test.txt").write_text("\n".join(line for line in lines if line.startswith("test")) + "\n")
    extra = ["data.ann_file.train=train.txt", "data.ann_file.test=test.txt", "data.classes=[ants,bees]"]
    classes, listings, _ = image_folder.scan(data_cfg(root, *extra))
    assert classes == ["ants", "bees"] and len(listings["train"].files) == 24
    (root / "test.txt").write_text("test/a/0.png 2\n")
    with pytest.raises(DataError, match=r"test.txt:1: expected 'relative/path label' with an integer label below 2"):
        image_folder.scan(data_cfg(root, *extra))


def test_holdout_is_stratified_disjoint_and_fixed_by_the_seed():
    labels = np.repeat(np.arange(4), [50, 30, 10, 2])
    train, val = stratified_holdout(labels, 0.1, seed=3)
    assert np.bincount(labels[val], minlength=4).tolist() == [5, 3, 1, 0]  # round(0.2) = 0 of the 2-image class
    assert not set(train) & set(val) and len(train) + len(val) == len(labels)
    assert np.array_equal(stratified_holdout(labels, 0.1, seed=3)[1], val)
    assert not np.array_equal(stratified_holdout(labels, 0.1, seed=4)[1], val)
    assert len(stratified_holdout(labels, 0.0, seed=3)[1]) == 0


def test_the_validation_split_is_held_out_of_train_or_is_the_val_folder(images):
    from mmclf.data.datasets import ImageFolderCache

    manifest_path = images / "data.json"
    manifest_path.write_text(json.dumps(image_cache.prepare(data_cfg(images))))

    def split(name, fraction=0.25):
        dataset = ImageFolderCache(data_prefix=str(images), ann_file=str(manifest_path), pipeline=[], split=name,
                                   val_fraction=fraction, split_seed=0)
        return {info["filename"] for info in dataset.data_infos}

    train, val, test = split("train"), split("val"), split("test")
    assert len(val) == 9 and len(train) == 27 and not train & val and not (train | val) & test
    write_image_folder(images, per_split={"val": 2})
    manifest_path.write_text(json.dumps(image_cache.prepare(data_cfg(images))))
    assert split("val") == {f"val/{c}/{n}.{e}" for c in ("cat", "dog", "owl") for n, e in ((0, "png"), (1, "jpg"))}
    assert len(split("train")) == 36, "with a val/ folder, train keeps every training image"


def test_pipelines_follow_the_image_size():
    norm = {"mean": [0, 0, 0], "std": [1, 1, 1], "to_rgb": False}
    small_train, small_test = image_cache.default_pipelines(32, norm)
    assert [step["type"] for step in small_train][:2] == ["RandomCrop", "RandomFlip"]
    assert small_train[0] == {"type": "RandomCrop", "size": 32, "padding": 4}
    assert [step["type"] for step in small_test] == ["Normalize", "ImageToTensor", "Collect"]
    large_train, large_test = image_cache.default_pipelines(64, norm)
    assert large_train[0] == {"type": "RandomResizedCrop", "size": 64}
    assert large_test[0] == {"type": "CenterCrop", "crop_size": 64}, "the stored square is larger than the crop"


def test_mmcls_pipelines_run_on_cached_images_at_64_px(images, tmp_path):
    from mmcls.datasets import build_dataset

    from mmclf.models.config import to_mmcv_config
    from mmclf.run.rundir import RunDir
    from mmclf.steps.prepare_data import prepare_data

    cfg = compose_cfg([*folder_overrides(images), "data.image_size=64"])
    prepare_data(cfg, RunDir(tmp_path / "run"))
    mm_cfg = to_mmcv_config(cfg, tmp_path / "run")
    for split in ("train", "test"):
        item = build_dataset(mm_cfg.data[split])[0]
        assert tuple(item["img"].shape) == (3, 64, 64), split
    assert mm_cfg.model.head.num_classes == 3, "the head follows the data"


def test_a_cache_dir_elsewhere_leaves_the_data_folder_untouched(images, tmp_path):
    before = sorted(str(p.relative_to(images)) for p in images.rglob("*"))
    image_cache.prepare(data_cfg(images, f"data.cache_dir={tmp_path / 'elsewhere'}"))
    assert sorted(str(p.relative_to(images)) for p in images.rglob("*")) == before, "a read-only folder would do"
    assert list((tmp_path / "elsewhere").glob("train-*.npy"))


def test_a_pipeline_of_your_own_replaces_the_size_chosen_one(images, tmp_path):
    from mmclf.models.config import to_mmcv_config
    from mmclf.run.rundir import RunDir
    from mmclf.steps.prepare_data import prepare_data

    cfg = compose_cfg(folder_overrides(images))
    own = [{"type": "RandomFlip", "flip_prob": 0.5}, {"type": "Normalize", "mean": [0, 0, 0], "std": [1, 1, 1]},
           {"type": "ImageToTensor", "keys": ["img"]}, {"type": "ToTensor", "keys": ["gt_label"]},
           {"type": "Collect", "keys": ["img", "gt_label"]}]
    cfg.data.train_pipeline = own
    prepare_data(cfg, RunDir(tmp_path / "run"))
    mm_cfg = to_mmcv_config(cfg, tmp_path / "run")
    assert mm_cfg.data.train.pipeline == own and mm_cfg.train_pipeline == own
    assert mm_cfg.data.test.pipeline[0]["type"] == "Normalize", "the test pipeline still follows the size"

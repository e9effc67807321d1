"""mmclf.models.zoo against the configs and model index mmcls 0.25 really ships: names, checkpoint URLs, the
model dicts with their classes set, one training step per family at the sizes it allows, and the CLI."""

import pytest

from mmclf.errors import ConfigError
from mmclf.models import zoo
from tests.conftest import run_cli

RESNET50 = "resnet/resnet50_8xb32_in1k"
SWIN_TINY = "swin_transformer/swin-tiny_16xb64_in1k"


def num_classes_values(node) -> list:
    """Every value of a ``num_classes`` key anywhere in ``node``."""
    if isinstance(node, dict):
        return [value for key, value in node.items() if key == "num_classes"] + [
            found for value in node.values() for found in num_classes_values(value)]
    if isinstance(node, (list, tuple)):
        return [found for item in node for found in num_classes_values(item)]
    return []


def test_config_names_are_the_shipped_configs():
    names = zoo.config_names()
    assert {RESNET50, "mobilenet_v2/mobilenet-v2_8xb32_in1k", SWIN_TINY} <= set(names)
    assert names == sorted(names)
    assert not [name for name in names if name.startswith("_base_/")]
    assert zoo.config_path(RESNET50).is_file()


def test_checkpoint_url_comes_from_the_model_index():
    assert zoo.checkpoint_url(RESNET50).startswith("https://download.openmmlab.com/")
    assert zoo.checkpoint_url(RESNET50).endswith(".pth")
    # mmcls's own training listed first, before the converted ("3rdparty") weights of the same config
    assert "swin_tiny_224_b16x64_300e_imagenet" in zoo.checkpoint_url(SWIN_TINY)
    assert zoo.checkpoint_url("lenet/lenet5_mnist") is None
    assert zoo.checkpoint_url("resnet/no_such_config") is None


@pytest.mark.parametrize("asked, first", [("resnet/resnet50_8xb32", RESNET50), ("resnet50_8xb32_in1k", RESNET50),
                                          ("swin/swin-tiny", SWIN_TINY)])
def test_unknown_name_gives_the_closest(asked, first):
    with pytest.raises(ConfigError) as caught:
        zoo.config_path(asked)
    message = str(caught.value)
    assert message.startswith(f"model.config={asked!r}: no such config in mmcls 0.25.0's zoo; closest: {first}, ")
    assert message.endswith("(python -m mmclf.zoo lists them)") and "\n" not in message


def test_empty_name_says_what_to_set():
    with pytest.raises(ConfigError, match=r"model\.config=<family>/<config>"):
        zoo.config_path("")


def test_model_dict_sets_num_classes_everywhere():
    model = zoo.model_dict(SWIN_TINY, 7)
    assert type(model) is dict and type(model["backbone"]) is dict
    augments = model["train_cfg"]["augments"]
    assert [augment["type"] for augment in augments] == ["BatchMixup", "BatchCutMix"]
    assert [augment["num_classes"] for augment in augments] == [7, 7]
    assert model["head"]["num_classes"] == 7
    assert num_classes_values(model) == [7, 7, 7]
    assert zoo.model_dict(RESNET50, 3)["head"]["topk"] == (1, 5)  # a tuple still: mmcls's ClsHead asserts one


def test_model_dict_of_a_config_that_does_not_load_is_refused():
    # mmcls 0.25 ships this config with a _base_ file missing
    with pytest.raises(ConfigError, match=r"mobilenet_v3_small_cifar: mmcls's config file .* does not load"):
        zoo.model_dict("mobilenet_v3/mobilenet_v3_small_cifar", 10)


# ResNet trains a whole run in test_finetune.py; a ViT resizes its position grid to 32 px
@pytest.mark.parametrize("name, image_size", [("deit/deit-tiny_pt-4xb256_in1k", 32)])
def test_check_trainable_passes_where_the_model_trains(name, image_size):
    zoo.check_trainable(zoo.model_dict(name, 3), image_size, 3, key=f"model.config={name}")


def test_check_trainable_refuses_swin_at_32_px_in_one_line():
    key = f"model.config={SWIN_TINY}"
    with pytest.raises(ConfigError) as caught:
        zoo.check_trainable(zoo.model_dict(SWIN_TINY, 3), 32, 3, key=key)
    message = str(caught.value)
    assert message.startswith(f"{key}: this model cannot train here at data.image_size=32 (AssertionError: ")
    assert message.endswith("; it runs at data.image_size=224") and "\n" not in message


def test_check_trainable_does_not_load_the_configs_own_checkpoint():
    # This fine-tuning config's backbone loads an ImageNet checkpoint by URL: the check must not fetch it.
    model = zoo.model_dict("resnet/resnet50_8xb8_cub", 4)
    assert model["backbone"]["init_cfg"]["type"] == "Pretrained"
    model["backbone"]["init_cfg"]["checkpoint"] = "http://127.0.0.1:9/nowhere.pth"
    zoo.check_trainable(model, 32, 4)


def run_zoo_cli(*args):
    return run_cli(*args, module="mmclf.zoo", timeout=60)


def test_cli_lists_and_filters():
    listed = run_zoo_cli("resnet50")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert "resnet:" in lines and "fp16:" in lines
    assert [line.split() for line in lines if f"{RESNET50} " in line] == [[RESNET50, zoo.checkpoint_url(RESNET50)]]
    # a config the model index gives no checkpoint for: "-"
    assert [line.split() for line in lines if "fp16/resnet50_b32x8_fp16_imagenet" in line] == [
        ["fp16/resnet50_b32x8_fp16_imagenet", "-"]]
    assert "mobilenet" not in listed.stdout and "swin" not in listed.stdout
    assert "model=zoo model.config=<family>/<config> [model.pretrained=zoo]" in lines[-1]


def test_cli_without_match_exits_2():
    listed = run_zoo_cli("no-such-model")
    assert listed.returncode == 2
    assert listed.stdout == ""
    assert len(listed.stderr.splitlines()) == 1 and "'no-such-model'" in listed.stderr

"""Any classifier mmcls ships a config for: its config file, its ``model`` dict and its zoo checkpoint.

mmcls 0.25 installs its configs as package data, ``mmcls/.mim/configs/<family>/<config>.py``, with
``.mim/model-index.yml``, which imports each family's ``metafile.yml``: the models mmcls trained or
converted, each with its ``Config`` and ``Weights`` (checkpoint URL). ``python -m mmclf.zoo [SUBSTRING]``
lists them. Nothing here imports mmcls, mmcv or torch at module import: the entry point starts fast.
"""
import argparse
import contextlib
import difflib
import functools
import importlib.metadata
import importlib.util
import logging
from pathlib import Path
from typing import Optional

import yaml

from mmclf.errors import ConfigError, exit_with

USAGE = "model=zoo model.config=<family>/<config> [model.pretrained=zoo]"
_LIST_HINT = "python -m mmclf.zoo lists them"


@functools.cache
def _mim_dir() -> Path:
    """mmcls's package data folder, found without importing mmcls (which imports torch)."""
    return Path(importlib.util.find_spec("mmcls").submodule_search_locations[0]) / ".mim"


def _mmcls_version() -> str:
    return importlib.metadata.version("mmcls")


def config_names() -> list[str]:
    """Every ``<family>/<config>`` mmcls ships (``_base_`` excluded: its parts are not whole recipes), sorted."""
    configs = _mim_dir() / "configs"
    return sorted(f"{path.parent.name}/{path.stem}" for path in configs.glob("*/*.py") if path.parent.name != "_base_")


@functools.cache
def _weights_by_config() -> dict[str, str]:
    """``configs/<family>/<config>.py`` -> the checkpoint URL of the first model the metafiles list for it."""
    mim = _mim_dir()
    imported = yaml.safe_load((mim / "model-index.yml").read_text())["Import"]
    # mmcls 0.25's model-index.yml leaves out mobilenet_v3's metafile: read every family's too.
    present = [str(path.relative_to(mim)) for path in sorted(mim.glob("configs/*/metafile.yml"))]
    weights = {}
    for metafile in dict.fromkeys([*imported, *present]):
        for model in yaml.safe_load((mim / metafile).read_text()).get("Models", []):
            # Several models can share a config (EMA or not, in21k-pretrained): the first is mmcls's own.
            if model.get("Config") and model.get("Weights"):
                weights.setdefault(model["Config"], model["Weights"])
    return weights


def checkpoint_url(name: str) -> Optional[str]:
    """The checkpoint URL mmcls's model index gives for config ``<family>/<config>``, or None."""
    return _weights_by_config().get(f"configs/{name}.py")


def _bare(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def closest_names(name: str, count: int = 3) -> list[str]:
    """The ``count`` config names most like ``name``, compared whole and without the family, so that
    ``resnet50_8xb32_in1k`` (or a wrong family) still finds ``resnet/resnet50_8xb32_in1k``; names that
    contain it first, so that a short ``vit-base`` finds ``vision_transformer/vit-base-p16_...``."""

    def likeness(candidate: str) -> tuple[bool, float]:
        return (_bare(name).lower() in candidate.lower(),
                max(difflib.SequenceMatcher(None, name, candidate).ratio(),
                    difflib.SequenceMatcher(None, _bare(name), _bare(candidate)).ratio()))

    return sorted(config_names(), key=likeness, reverse=True)[:count]


def config_path(name: str) -> Path:
    """The file of mmcls config ``<family>/<config>``; an unknown name is refused with the closest ones."""
    if not name:
        raise ConfigError(f"model.config is not set: model=zoo needs model.config=<family>/<config> ({_LIST_HINT})")
    if name not in config_names():
        raise ConfigError(f"model.config={name!r}: no such config in mmcls {_mmcls_version()}'s zoo; "
                          f"closest: {', '.join(closest_names(name))} ({_LIST_HINT})")
    return _mim_dir() / "configs" / f"{name}.py"


def with_num_classes(value, num_classes: int):
    """``value`` as plain dicts, lists and tuples (tuples kept: mmcls asserts ``topk`` is one), with every
    ``num_classes`` key inside set to ``num_classes``."""
    if isinstance(value, dict):
        return {key: num_classes if key == "num_classes" else with_num_classes(item, num_classes)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(with_num_classes(item, num_classes) for item in value)
    return value


def model_dict(name: str, num_classes: int) -> dict:
    """The ``model`` dict of mmcls config ``name`` (its ``_base_`` files merged) as plain data, with every
    ``num_classes`` in it (head, batch augments such as BatchMixup/BatchCutMix, losses) set to ``num_classes``."""
    from mmcv import Config  # here: mmcv imports torch

    path = config_path(name)
    try:
        config = Config.fromfile(str(path))
    except Exception as err:  # mmcls 0.25 ships a few configs whose _base_ file is missing
        raise ConfigError(f"model.config={name}: mmcls's config file {path} does not load "
                          f"({_described(err)}); pick another ({_LIST_HINT})") from None
    model = config.get("model")
    if not isinstance(model, dict):
        raise ConfigError(f"model.config={name}: {path} defines no model dict; pick another ({_LIST_HINT})")
    return with_num_classes(model, num_classes)


def _described(err: BaseException) -> str:
    """``err``'s type and the first line of its message (mmcls asserts often have none)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def without_pretrained(value):
    """``value`` without the ``init_cfg``s that load a checkpoint (mmcls's fine-tuning configs name URLs):
    the check is about the architecture, and must neither download nor read a checkpoint."""
    if isinstance(value, dict):
        return {key: without_pretrained(item) for key, item in value.items()
                if not (key == "init_cfg" and isinstance(item, dict) and item.get("type") == "Pretrained")}
    if isinstance(value, (list, tuple)):
        return type(value)(without_pretrained(item) for item in value)
    return value


def _train_one_step(model: dict, image_size: int, num_classes: int) -> None:
    """Build ``model``, initialise it and train one step (forward, loss, backward) on 2 random images."""
    import torch
    from mmcls.models import build_classifier

    classifier = build_classifier(without_pretrained(model))
    classifier.init_weights()
    classifier.train()
    batch = {"img": torch.rand(2, 3, image_size, image_size), "gt_label": torch.arange(2) % num_classes}
    classifier.train_step(batch, None)["loss"].backward()


def _runs_at(model: dict, image_size: int) -> bool:
    """Whether ``model`` gets through a forward pass of one image of ``image_size`` px (no gradients: a
    hint's check, a sixth of a training step's cost)."""
    import torch
    from mmcls.models import build_classifier

    try:
        classifier = build_classifier(without_pretrained(model)).eval()
        with torch.no_grad():
            classifier(img=torch.rand(1, 3, image_size, image_size), return_loss=False)
    except Exception:
        return False
    return True


def _size_hint(model: dict, image_size: int) -> str:
    """The image size to set, when the model runs at the one its backbone is built for (transformers
    fix theirs at build), or else at ImageNet's 224 px; "" when it does not run there either."""
    other = model.get("backbone", {}).get("img_size", 224)
    if other == image_size or not _runs_at(model, other):
        return ""
    return f"; it runs at data.image_size={other}"


def check_trainable(model: dict, image_size: int, num_classes: int, key: str = "model.config") -> None:
    """Build ``model``, initialise it and train one step on 2 random images of ``image_size`` px: a model
    that cannot train at that size (a transformer built for 224 px, a CNN that downsamples a small image
    to nothing) is refused in one line before any real work, with the size it runs at when there is one.
    ``key`` starts that line: what the user set, e.g. ``model.config=swin_transformer/swin-tiny_16xb64_in1k``.
    Checkpoints the model would load (``Pretrained`` init_cfgs) are left out of the check."""
    import mmcls.models  # noqa: F401  (before mmcls_logger: see below)

    from mmclf.run.logs import mmcls_logger

    # Importing mmcls.models sets up mmcv's logger, raising the root logger's console handlers to ERROR:
    # mmcls_logger lowers them back. In that order, as the train step does: mmcv logs its init tables to
    # the first logger it set up, which must stay mmcv's (quiet), not mmcls's (the run's log).
    mmcls_logger()
    with _quiet("mmcv", "mmcls"):
        try:
            _train_one_step(model, image_size, num_classes)
        except Exception as err:
            hint = _size_hint(model, image_size)
            raise ConfigError(f"{key}: this model cannot train here at data.image_size={image_size} "
                              f"({_described(err)}){hint}") from None


@contextlib.contextmanager
def _quiet(*names: str):
    """Loggers ``names`` at WARNING inside: init_weights logs a table per parameter at INFO, to whichever
    of mmcv's loggers was set up first (mmcv or mmcls, depending on what was imported first)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _print_listing(names: list[str]) -> None:
    """``names`` grouped by family, each with its checkpoint URL ("-" for none), then counts and usage."""
    families = {}
    for name in names:
        families.setdefault(name.split("/", 1)[0], []).append(name)
    width = max(len(name) for name in names)
    for family, members in families.items():
        print(f"{family}:")
        for name in members:
            print(f"  {name:<{width}}  {checkpoint_url(name) or '-'}")
    with_weights = sum(checkpoint_url(name) is not None for name in names)
    print(f"{len(names)} configs in {len(families)} families of mmcls {_mmcls_version()}, {with_weights} with a "
          f"checkpoint; train one with: python -m mmclf {USAGE}")


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m mmclf.zoo [SUBSTRING]``: list mmcls's configs (those whose name contains SUBSTRING)."""
    parser = argparse.ArgumentParser(prog="python -m mmclf.zoo", description=main.__doc__)
    parser.add_argument("substring", nargs="?", default="", help="list only configs whose name contains it")
    substring = parser.parse_args(argv).substring
    names = [name for name in config_names() if substring.lower() in name.lower()]
    if not names:
        exit_with(ConfigError(f"no config in mmcls {_mmcls_version()}'s zoo has {substring!r} in its name; "
                              "python -m mmclf.zoo lists them all"))
    _print_listing(names)


if __name__ == "__main__":
    main()

"""What an mmcls train pipeline does to each image, read from its config for the device loader.

The device loader (``device_loader.py``) reproduces mmcls's CIFAR pipelines: ``RandomCrop``
with constant padding, ``RandomFlip`` and ``Normalize``, followed by the formatting steps
(``ImageToTensor``, ``ToTensor``, ``Collect``) whose tensors it emits directly. Anything else
stops with a message that points back to ``data.loader=mmcls``, the reference path.
"""
from dataclasses import dataclass
from typing import Optional

from mmclf.errors import ConfigError

KEY = "data.train_pipeline"
FORMATTING = ("ImageToTensor", "ToTensor", "Collect")


@dataclass(frozen=True)
class Augment:
    """Per-image augmentation and normalisation, with mmcls's semantics.

    RandomCrop pads each side with ``pad_val`` and crops ``crop_size`` at an offset drawn
    uniformly from every position; RandomFlip mirrors the image with probability
    ``flip_prob``; Normalize reverses the channels if ``to_rgb`` and computes
    ``(x - mean) / std`` (in float32, as ``mmcv.imnormalize`` rounds it).
    """

    mean: tuple
    std: tuple
    to_rgb: bool
    crop_size: Optional[tuple] = None  # None: no RandomCrop, the image keeps its size
    padding: int = 0
    pad_val: int = 0
    flip_prob: float = 0.0
    flip_direction: str = "horizontal"


def _random_crop(size, padding=None, pad_if_needed=False, pad_val=0, padding_mode="constant") -> dict:
    if pad_if_needed or padding_mode != "constant":
        raise ConfigError(f"{KEY}: RandomCrop on the device supports only constant padding "
                          "(pad_if_needed=false, padding_mode=constant); use data.loader=mmcls")
    # mmcv.impad takes a list padding as an error and pads uint8 images: an int and a byte fit every mmcls run.
    if not isinstance(padding or 0, int) or not isinstance(pad_val, int) or not 0 <= pad_val <= 255:
        raise ConfigError(f"{KEY}: RandomCrop on the device needs an int padding and an int pad_val in "
                          f"[0, 255], found padding={padding!r}, pad_val={pad_val!r}; use data.loader=mmcls")
    crop_size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    return {"crop_size": crop_size, "padding": padding or 0, "pad_val": pad_val}


def _random_flip(flip_prob=0.5, direction="horizontal") -> dict:
    if direction not in ("horizontal", "vertical") or not 0 <= flip_prob <= 1:
        raise ConfigError(f"{KEY}: RandomFlip needs flip_prob in [0, 1] and direction horizontal or vertical, "
                          f"found flip_prob={flip_prob!r}, direction={direction!r}")
    return {"flip_prob": float(flip_prob), "flip_direction": direction}


def _normalize(mean, std, to_rgb=True) -> dict:
    return {"mean": tuple(mean), "std": tuple(std), "to_rgb": bool(to_rgb)}


STEPS = {"RandomCrop": _random_crop, "RandomFlip": _random_flip, "Normalize": _normalize}


def parse_pipeline(pipeline) -> Augment:
    """The ``Augment`` of an mmcls train pipeline (a list of dicts with ``type``)."""
    fields, seen = {}, []
    for step in pipeline:
        args = dict(step)
        kind = args.pop("type")
        if kind in FORMATTING:
            continue
        if kind not in STEPS:
            raise ConfigError(f"{KEY}: {kind} has no device version (the device loader runs "
                              f"{', '.join(STEPS)} and {', '.join(FORMATTING)}); use data.loader=mmcls")
        if kind in seen or "Normalize" in seen:
            # The device loader pads raw pixels, so Normalize must be the last of these steps (as in
            # every mmcls CIFAR pipeline); each step once.
            raise ConfigError(f"{KEY}: the device loader needs RandomCrop and RandomFlip at most once each, "
                              f"then Normalize; found {seen + [kind]}; use data.loader=mmcls")
        seen.append(kind)
        try:
            fields.update(STEPS[kind](**args))
        except TypeError as err:
            raise ConfigError(f"{KEY}: {kind}: {err}") from None
    if "Normalize" not in seen:
        raise ConfigError(f"{KEY}: the device loader needs a Normalize step (the model takes float input)")
    return Augment(**fields)

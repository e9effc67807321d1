"""What size an image is stored at, and the views the pipelines take from it.

Below IMAGENET_FROM px (CIFAR-style) an image is stored squashed to ``data.image_size`` square. From it
(ImageNet-style), an image of your own folder is stored with its aspect ratio kept: the shorter side
resized to ``data.cache_size`` (default about 256/224 of ``data.image_size``, as mmcls's ImageNet
recipes resize before their centre crop), the centre kept as a square of that side. The test view is
then a CenterCrop of ``data.image_size``: mmcls's ``Resize((cache_size, -1))`` then ``CenterCrop``
of the same file. The generated datasets (digits, synthetic, CIFAR format) are square already and
stay stored at ``data.image_size``. No numpy here: validation (on the compile path) reads it.
"""
from mmclf.errors import ConfigError

IMAGENET_FROM = 64  # px: from this size the ImageNet-style pipeline, below it the CIFAR-style one
MARGIN_STEP = 4  # px: data.cache_size - data.image_size is a multiple of this (see default_cache_size)


def imagenet_style(image_size: int) -> bool:
    return image_size >= IMAGENET_FROM


def default_cache_size(image_size: int) -> int:
    """About image_size x 256/224 (224: 256), its margin around the crop a multiple of 4: mmcls's CenterCrop
    rounds a half pixel to even, so only with an even margin on each side are the centre of the stored
    square and the centre of mmcls's resized image the same pixels."""
    return image_size + MARGIN_STEP * max(1, round((image_size * 256 / 224 - image_size) / MARGIN_STEP))


def keeps_aspect(stored: int, image_size: int) -> bool:
    """Whether images stored as squares of ``stored`` px for ``image_size`` keep their aspect ratio: exactly
    where the stored square is larger than the crop (below IMAGENET_FROM px both are ``image_size``)."""
    return stored > image_size


def stored_size(data) -> int:
    """The side of the square each image of ``data`` (a data config) is stored at, and the side of the
    images the exported model, ``mmclf.deploy.predict`` and the server take."""
    if data.get("name") != "folder" or not imagenet_style(data["image_size"]):
        return data["image_size"]
    return data.get("cache_size") or default_cache_size(data["image_size"])


def check_cache_size(data) -> None:
    """``data.cache_size`` null, or an integer above ``data.image_size`` by a multiple of MARGIN_STEP."""
    size, crop = data.get("cache_size"), data["image_size"]
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, int) or size <= crop or (size - crop) % MARGIN_STEP:
        raise ConfigError(f"data.cache_size={size!r}: must be null (about 256/224 of data.image_size) or an integer "
                          f"above data.image_size={crop} by a multiple of {MARGIN_STEP} (so the centre crop is "
                          f"mmcls's to the pixel), e.g. data.cache_size={default_cache_size(crop)}")
    if not imagenet_style(crop):
        raise ConfigError(f"data.cache_size={size}: applies from data.image_size={IMAGENET_FROM} (ImageNet-style "
                          f"views); below it images are stored at data.image_size={crop}; set data.cache_size=null")

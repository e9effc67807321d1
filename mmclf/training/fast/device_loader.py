"""A training split held on the device, batched, augmented and normalised there.

mmcls's reference path decodes, pads, crops, flips and normalises each image in numpy inside
DataLoader workers and copies every batch to the device. Here the split sits on the training
device once, as uint8, and each batch is one index computation and one row copy, then one
normalisation, all on the device. Batches are the dicts mmcls's ``train_step`` takes
(``img`` float32 NCHW, ``gt_label`` int64), so mmcv's runner and hooks run unchanged.
"""
import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from mmclf.errors import ConfigError
from mmclf.training.fast.augment import Augment, parse_pipeline

log = logging.getLogger(__name__)


def padded_store(images: np.ndarray, augment: Augment, device: torch.device) -> torch.Tensor:
    """The split on ``device`` as uint8 (variants, N, H + 2 * padding, W + 2 * padding, C): channels in
    the order Normalize's mean and std refer to, padded with ``pad_val`` as mmcls pads raw pixels,
    and, when the pipeline flips, a mirrored copy as the second variant."""
    store = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    if augment.to_rgb:
        store = store.flip(-1)  # BGR -> RGB, as Normalize(to_rgb=True) does first
    pad = augment.padding
    store = F.pad(store, (0, 0, pad, pad, pad, pad), value=augment.pad_val)
    # With a mirrored copy a flip is a choice of source, not a pass over the batch: the crop of
    # the mirror at (top, left) is the mirror of a crop of the image, and offsets are uniform,
    # so crops and flips keep mmcls's distribution.
    variants = [store]
    if augment.flip_prob > 0:
        variants.append(store.flip(2 if augment.flip_direction == "horizontal" else 1))
    return torch.stack(variants).contiguous()


def free_bytes(device: str) -> int | None:
    """The memory free for the split on ``device``: the GPU's free memory, or for the CPU the memory the
    kernel says is available (MemAvailable); None where that cannot be read."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as meminfo:
            return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return None


def check_fits(count: int, shape: tuple, augment: Augment, device: str) -> None:
    """Refuse, before copying anything, a split whose padded store (and, while it is placed, a second
    copy of it) would not fit in the device's free memory."""
    height, width, channels = shape
    variants = 2 if augment.flip_prob > 0 else 1
    store = variants * count * (height + 2 * augment.padding) * (width + 2 * augment.padding) * channels
    free = free_bytes(device)
    if free is not None and 2 * store > free:
        raise ConfigError(f"data.loader=device: the training split takes {store / 2**20:,.0f} MiB on {device} "
                          f"({count} images of {height}x{width}, padded{', and mirrored' if variants == 2 else ''}) "
                          f"and twice that while it is placed; {free / 2**20:,.0f} MiB are free there. Set "
                          "data.loader=mmcls: its DataLoader reads batches from the cache instead")


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s share of ``order``, as mmcls's DistributedSampler shares one out: the order
    wrapped round to a multiple of ``world_size``, then every ``world_size``-th index from ``rank``.
    Every rank gets as many images, so every rank runs as many iterations (DDP needs that)."""
    total = math.ceil(len(order) / world_size) * world_size
    padded = order.repeat(math.ceil(total / len(order)))[:total]
    return padded[rank:total:world_size]


class DeviceLoader:
    """Shuffled batches of one split, each epoch a new permutation; the last batch may be short
    (mmcls's non-distributed loader keeps it too). With several ranks, each batches its share."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment: Augment, batch_size: int,
                 device: str, seed: int, channels_last: bool = False, rank: int = 0, world_size: int = 1):
        """``images``: (N, H, W, C) uint8 as in mmcls's ``data_infos``; ``labels``: (N,) int."""
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.seed, self.epoch = seed, 0
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.labels = torch.as_tensor(labels, dtype=torch.int64).to(self.device)
        self.count, height, width, self.channels = images.shape
        self.crop_h, self.crop_w = augment.crop_size or (height, width)
        self.flip_prob = augment.flip_prob
        self.store = padded_store(images, augment, self.device)
        self.padded_h, self.padded_w = self.store.shape[2:4]
        if self.padded_h < self.crop_h or self.padded_w < self.crop_w:
            raise ConfigError(f"data.train_pipeline: RandomCrop size {(self.crop_h, self.crop_w)} exceeds the "
                              f"padded image {(self.padded_h, self.padded_w)}")
        # Each row of a crop is crop_w * C contiguous bytes of the store; a sliding-window view
        # with one row starting at every byte turns the crop of a whole batch into one
        # index_select of rows (a row copy each) instead of a per-pixel gather.
        row_bytes = self.crop_w * self.channels
        flat = self.store.view(-1)
        self.rows = flat.as_strided((flat.numel() - row_bytes + 1, row_bytes), (1, 1))
        self.mean = torch.tensor(augment.mean, dtype=torch.float32, device=self.device).view(-1, 1, 1)
        # mmcv.imnormalize multiplies by 1 / std, taken in float64 from mmcls's float32 std; OpenCV's
        # kernel then rounds it to float32 and multiplies in float32 (OpenCV 5.1 on AVX2 and AVX-512),
        # or multiplies in float64, by its version and the CPU. float32 here: the same values as the
        # former, one float32 step at most from the latter, and no float64 arithmetic on a GPU.
        stdinv = 1 / torch.tensor(augment.std, dtype=torch.float32).double()
        self.stdinv = stdinv.float().to(self.device).view(-1, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s shuffle, crops and flips from (seed, epoch) alone, so a resumed
        run repeats them (mmclf.training.hooks.EpochSeedHook calls this at every epoch start)."""
        from mmclf.training.hooks import epoch_seed

        self.epoch = epoch
        self.generator.manual_seed(epoch_seed(self.seed, epoch))

    def __len__(self) -> int:
        return math.ceil(math.ceil(self.count / self.world_size) / self.batch_size)

    def __iter__(self):
        # One shuffle of the whole split, the same on every rank (seeded by seed and epoch alone)...
        order = torch.randperm(self.count, device=self.device, generator=self.generator)
        if self.world_size > 1:
            from mmclf.training.hooks import epoch_seed

            order = shard(order, self.rank, self.world_size)
            # ...and crops and flips of each rank's own (a 1-process run draws them as it always has).
            self.generator.manual_seed(epoch_seed(self.seed, self.epoch, self.rank))
        for index in order.split(self.batch_size):
            yield {"img": self.augment(index), "gt_label": self.labels[index]}

    def augment(self, index: torch.Tensor) -> torch.Tensor:
        """Crop, flip and normalise the images ``index``: float32 (B, C, H, W)."""
        batch = len(index)
        top = self._uniform(self.padded_h - self.crop_h + 1, batch)
        left = self._uniform(self.padded_w - self.crop_w + 1, batch)
        variant = (torch.rand((batch, 1), device=self.device, generator=self.generator) < self.flip_prob).long()
        rows = top + torch.arange(self.crop_h, device=self.device)
        # Flat offset in the store of every crop row: (variant, image, row, column left, channel 0).
        pixel = ((variant * self.count + index[:, None]) * self.padded_h + rows) * self.padded_w + left
        crops = self.rows.index_select(0, (pixel * self.channels).flatten())
        crops = crops.view(batch, self.crop_h, self.crop_w, self.channels).permute(0, 3, 1, 2)
        out = torch.empty(crops.shape, dtype=torch.float32, device=self.device, memory_format=self.memory_format)
        return torch.sub(crops, self.mean, out=out).mul_(self.stdinv)

    def _uniform(self, high: int, batch: int) -> torch.Tensor:
        return torch.randint(0, high, (batch, 1), device=self.device, generator=self.generator)


def from_dataset(dataset, pipeline, batch_size: int, device: str, seed: int, channels_last: bool,
                 rank: int = 0, world_size: int = 1) -> DeviceLoader:
    """A ``DeviceLoader`` over an mmcls dataset whose ``data_infos`` hold the images
    (CIFAR10, CifarFormat), augmented as ``pipeline`` (the train pipeline's dicts) says."""
    augment = parse_pipeline(pipeline)
    infos = dataset.data_infos
    if not infos or "img" not in infos[0]:
        raise ConfigError(f"data.loader=device needs a dataset that holds its images in memory (CIFAR10, "
                          f"CifarFormat); {type(dataset).__name__} reads them per image: use data.loader=mmcls")
    check_fits(len(infos), infos[0]["img"].shape, augment, device)
    images = np.stack([info["img"] for info in infos])
    labels = np.array([int(info["gt_label"]) for info in infos])
    log.info("device loader: %d images %s on %s, %s", len(images), images.shape[1:], device, augment)
    return DeviceLoader(images, labels, augment, batch_size, device, seed, channels_last, rank, world_size)

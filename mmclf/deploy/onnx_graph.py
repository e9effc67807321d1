"""The graph the export step writes to ONNX: uint8 RGB images in, class scores out, the run's test
pipeline inside.

A client sends what ``mmclf.data.image_folder.decode`` makes, (N, S, S, 3) uint8 RGB of the stored size
(mmclf/data/views.py),
and gets mmcls's softmax scores (N, classes). The graph reproduces each test-pipeline transform in torch
ops: ``Resize`` (mmcv's cv2 bilinear, in OpenCV's own fixed-point arithmetic, so the resized pixels are
OpenCV's to the bit), ``CenterCrop``, ``Normalize``; the tensor conversions need nothing. A transform
it has no version of is refused: the export step measures parity, but cannot mend a missing step.
"""
import numpy as np
import torch
from torch import nn

from mmclf.errors import ExportError

COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE: interpolation weights in 1/2048
NO_OP_TRANSFORMS = ("ImageToTensor", "ToTensor", "Collect")  # layout and bookkeeping: the graph's end does these


def linear_taps(src: int, dst: int, clamp_weights: bool) -> tuple[np.ndarray, ...]:
    """OpenCV's INTER_LINEAR taps from ``src`` to ``dst`` pixels along one axis: (first source index,
    second source index, their weights in 1/2048) per output pixel, computed as OpenCV's resize.cpp
    computes them (float32 positions, weights rounded to even). Along x OpenCV moves a border pixel's
    position onto the edge (weight 0 to its neighbour); along y it keeps the weights and repeats the
    edge row."""
    scale = 1.0 / (dst / src)  # OpenCV divides by its inverse scale, in double
    position = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    fraction = position - first.astype(np.float32)
    if clamp_weights:
        fraction[(first < 0) | (first >= src - 1)] = 0
    weight1 = np.rint(fraction * np.float32(COEF_SCALE)).astype(np.int64)
    weight0 = np.rint((np.float32(1) - fraction) * np.float32(COEF_SCALE)).astype(np.int64)
    return np.clip(first, 0, src - 1), np.clip(first + 1, 0, src - 1), weight0, weight1


class CvResize(nn.Module):
    """``mmcv.imresize(backend="cv2", interpolation="bilinear")`` of uint8 images held in int32 (N, H, W, C).

    OpenCV's fixed-point INTER_LINEAR: a horizontal pass in 1/2048 units, then the vertical pass as its
    vectorised code does it (each value shifted right by 4 to fit 16 bits, the high 16 bits of each
    product kept, then a rounded shift by 2). Measured against cv2 5.0 pixel for pixel: enlarging, as the
    folder test pipeline's Resize does (tests/test_export.py), and shrinking (100 to 73, 64 to 32 px);
    another OpenCV's arithmetic would show in the export step's parity check. Every value stays
    non-negative, so truncating integer division (ONNX Div) is the right shift."""

    def __init__(self, src: tuple[int, int], dst: tuple[int, int]):
        super().__init__()
        x0, x1, a0, a1 = linear_taps(src[1], dst[1], clamp_weights=True)
        y0, y1, b0, b1 = linear_taps(src[0], dst[0], clamp_weights=False)
        for name, values, shape in (("x0", x0, -1), ("x1", x1, -1), ("y0", y0, -1), ("y1", y1, -1),
                                    ("a0", a0, (1, 1, -1, 1)), ("a1", a1, (1, 1, -1, 1)),
                                    ("b0", b0, (1, -1, 1, 1)), ("b1", b1, (1, -1, 1, 1))):
            self.register_buffer(name, torch.from_numpy(values).reshape(shape).to(torch.int32))

    @staticmethod
    def _shift(x: torch.Tensor, bits: int) -> torch.Tensor:
        return torch.div(x, 2**bits, rounding_mode="trunc")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.index_select(2, self.x0) * self.a0 + x.index_select(2, self.x1) * self.a1
        top = self._shift(self._shift(rows.index_select(1, self.y0), 4) * self.b0, 16)
        bottom = self._shift(self._shift(rows.index_select(1, self.y1), 4) * self.b1, 16)
        return self._shift(top + bottom + 2, 2)


class Crop(nn.Module):
    """A fixed window (top, left, height, width) of (N, H, W, C) images."""

    def __init__(self, top: int, left: int, height: int, width: int):
        super().__init__()
        self.top, self.left, self.height, self.width = top, left, height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.top:self.top + self.height, self.left:self.left + self.width]


class Normalize(nn.Module):
    """mmcv's ``imnormalize``: float, channels reversed when ``to_rgb``, minus mean, over std."""

    def __init__(self, mean, std, to_rgb: bool):
        super().__init__()
        self.to_rgb = bool(to_rgb)
        self.register_buffer("mean", torch.tensor(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("inverse_std", torch.tensor(1.0 / np.asarray(std, dtype=np.float64), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.to_rgb:  # mmcv swaps BGR to RGB here; on RGB input that reverses the channels just the same
            x = x.flip(-1)
        return (x - self.mean) * self.inverse_std


def _resize(transform, shape: tuple[int, int]) -> tuple[nn.Module, tuple[int, int]]:
    if (transform.interpolation, transform.backend) != ("bilinear", "cv2"):
        raise ExportError(f"runtime.export.onnx: the test pipeline's Resize(interpolation={transform.interpolation}, "
                          f"backend={transform.backend}) has no in-graph version (only bilinear, cv2); set "
                          "runtime.export.onnx=false")
    # mmcls's own transform on a blank image says what size it makes (its adaptive-side rules included).
    resized = transform({"img": np.zeros((*shape, 3), dtype=np.uint8)})["img"].shape[:2]
    return (CvResize(shape, resized) if resized != shape else nn.Identity()), resized


def _center_crop(transform, shape: tuple[int, int]) -> tuple[nn.Module, tuple[int, int]]:
    if transform.efficientnet_style:
        raise ExportError("runtime.export.onnx: the test pipeline's CenterCrop(efficientnet_style=True) has no "
                          "in-graph version; set runtime.export.onnx=false")
    # mmcls's own transform on an image of pixel indices says where it crops (its rounding included).
    indices = np.arange(shape[0] * shape[1]).reshape(*shape, 1)
    window = transform({"img": indices})["img"]
    top, left = divmod(int(window[0, 0, 0]), shape[1])
    return Crop(top, left, *window.shape[:2]), window.shape[:2]


def _normalize(transform, shape: tuple[int, int]) -> tuple[nn.Module, tuple[int, int]]:
    return Normalize(transform.mean, transform.std, transform.to_rgb), shape


IN_GRAPH = {"Resize": _resize, "CenterCrop": _center_crop, "Normalize": _normalize}


def preprocessing(transforms: list, image_size: int) -> list[nn.Module]:
    """The graph's version of the test pipeline ``transforms`` (mmcls transform objects) for square
    images of ``image_size``: Resize and CenterCrop work on the uint8 pixels, so Normalize comes last."""
    modules, shape = [], (image_size, image_size)
    for transform in transforms:
        name = type(transform).__name__
        if name in NO_OP_TRANSFORMS:
            continue
        if name not in IN_GRAPH or any(isinstance(module, Normalize) for module in modules):
            raise ExportError(f"runtime.export.onnx: the test pipeline's {name} has no in-graph version here (the "
                              "graph has Resize and CenterCrop, then Normalize); set runtime.export.onnx=false")
        module, shape = IN_GRAPH[name](transform, shape)
        modules.append(module)
    return modules


class ExportedClassifier(nn.Module):
    """uint8 RGB images (N, S, S, 3) -> the classifier's softmax scores (N, classes), the test pipeline inside."""

    def __init__(self, classifier: nn.Module, transforms: list, image_size: int):
        super().__init__()
        self.preprocess = nn.Sequential(*preprocessing(transforms, image_size))
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # int32: the resize's fixed-point sums outgrow uint8; float once the pixels are final
        x = self.preprocess(images.to(torch.int32)).float()
        # mmcls's ImageToTensor: channels first; simple_test without post-processing: the scores as a tensor
        return self.classifier.simple_test(x.permute(0, 3, 1, 2), post_process=False)

"""The served model's side of the Open Inference Protocol (v2), read and written as Triton does: its
metadata, and infer requests and responses as JSON or with the binary tensor data extension (a JSON
header of ``Inference-Header-Content-Length`` bytes, then each binary tensor's raw bytes in order).

No web framework and no onnxruntime here: serve.py hands a request's body in and sends the bytes this
module makes, so every rule about a request is checked before the model runs, and a request that breaks
one is a ``ClientError`` (a 4xx with one line that names the fix), never a 500.
"""
import json
from dataclasses import dataclass

import numpy as np

from mmclf.deploy.protocol import INPUT, OUTPUT

HEADER_LENGTH = "Inference-Header-Content-Length"
PLATFORM = "onnxruntime_onnx"  # what Triton reports for the ONNX model backend.serve deploys
VERSION = "1"  # the one version: the Triton model repository backend.serve writes has 1/model.onnx
UINT8_RANGE = (0, 255)
JSON_BYTES_PER_VALUE = 6  # "255, " and a little room: a JSON request's body allowed per input value


class ClientError(Exception):
    """A request this server refuses: ``status`` (400 or 413) and one line saying what to send instead."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServedModel:
    """What the server knows of the model: its name, image size, number of classes and batch limit."""
    name: str
    height: int
    width: int
    classes: int
    max_batch: int

    def metadata(self) -> dict:
        """The model metadata response, with the shapes Triton reports for a model with a batch dimension."""
        return {"name": self.name, "versions": [VERSION], "platform": PLATFORM,
                "inputs": [{"name": INPUT, "datatype": "UINT8", "shape": [-1, self.height, self.width, 3]}],
                "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, self.classes]}]}

    def image_values(self) -> int:
        return self.height * self.width * 3

    def max_body_bytes(self) -> int:
        """The largest body a request of ``max_batch`` images may need, as JSON (the larger encoding)."""
        return self.max_batch * self.image_values() * JSON_BYTES_PER_VALUE + 65536

    def too_large(self, size: int) -> ClientError:
        return ClientError(f"request body of {size} bytes is over this server's limit of {self.max_body_bytes()} "
                           f"(--max-batch {self.max_batch} images of {self.height}x{self.width}); send fewer images "
                           "per request, or start the server with a larger --max-batch", status=413)


@dataclass(frozen=True)
class InferRequest:
    images: np.ndarray  # uint8 [N, H, W, 3]
    id: str | None
    binary_output: bool


def parse_infer(body: bytes, header_length: str | None, model: ServedModel) -> InferRequest:
    """The images of an infer request's body, every rule checked; ``header_length`` is the
    Inference-Header-Content-Length header (None: the whole body is JSON, whatever its Content-Type)."""
    json_size = len(body) if header_length is None else _header_size(header_length, len(body))
    request = _json_object(body[:json_size])
    tensor = _the_input(request.get("inputs"))
    shape = _shape(tensor.get("shape"), model)
    images = _binary_data(tensor, body[json_size:], shape) if json_size < len(body) else _json_data(tensor, shape)
    return InferRequest(images.reshape(shape), _request_id(request), _binary_output(request))


def infer_response(request: InferRequest, scores: np.ndarray, model: ServedModel) -> tuple[bytes, dict]:
    """(body, headers) answering ``request`` with the model's ``scores``: JSON, or the JSON header and the
    scores' little-endian FP32 bytes when the request asked for binary output."""
    output = {"name": OUTPUT, "datatype": "FP32", "shape": list(scores.shape)}
    raw = scores.astype("<f4").tobytes()
    if request.binary_output:
        output["parameters"] = {"binary_data_size": len(raw)}
    else:
        output["data"] = scores.ravel().tolist()
    response = {"model_name": model.name, "model_version": VERSION, "outputs": [output]}
    if request.id is not None:
        response["id"] = request.id
    header = json.dumps(response).encode()
    if not request.binary_output:
        return header, {"Content-Type": "application/json"}
    return header + raw, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def _header_size(header_length: str, body_size: int) -> int:
    try:
        size = int(header_length)
    except ValueError:
        size = -1
    if not 0 < size <= body_size:
        raise ClientError(f"{HEADER_LENGTH}: {header_length!r} is not the size of the JSON part of a body of "
                          f"{body_size} bytes; give the JSON header's length in bytes, or leave the header out to "
                          "send JSON only")
    return size


def _json_object(raw: bytes) -> dict:
    try:
        request = json.loads(raw)
    except ValueError as err:  # UnicodeDecodeError is one too
        raise ClientError(f"the request is not JSON ({err}); send a v2 infer request: "
                          f'{{"inputs": [{{"name": "{INPUT}", "datatype": "UINT8", "shape": [N, H, W, 3], '
                          '"data": [...]}]}') from None
    if not isinstance(request, dict):
        raise ClientError(f"the request is JSON {type(request).__name__}, not an object; send "
                          f'{{"inputs": [{{"name": "{INPUT}", ...}}]}}')
    return request


def _the_input(inputs) -> dict:
    if not isinstance(inputs, list) or not all(isinstance(tensor, dict) for tensor in inputs):
        raise ClientError(f'"inputs" must be a list of tensors; send one tensor named {INPUT!r}')
    names = [tensor.get("name") for tensor in inputs]
    if names != [INPUT]:
        raise ClientError(f"inputs {names}: this model takes exactly one input, {INPUT!r} (UINT8, [N, H, W, 3])")
    (tensor,) = inputs
    if tensor.get("datatype") != "UINT8":
        raise ClientError(f"{INPUT}: datatype {tensor.get('datatype')!r}; send UINT8 RGB pixel values 0-255")
    return tensor


def _shape(shape, model: ServedModel) -> tuple[int, ...]:
    fits = f"[N, {model.height}, {model.width}, 3] with N from 1 to {model.max_batch}"
    if (not isinstance(shape, list) or len(shape) != 4
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise ClientError(f"{INPUT}: shape {shape!r}; this model takes {fits} (uint8 RGB images)")
    if tuple(shape[1:]) != (model.height, model.width, 3):
        raise ClientError(f"{INPUT}: shape {shape}; this model takes {fits} (resize the images to "
                          "that square as mmclf.data.image_folder.decode does)")
    if shape[0] == 0:
        raise ClientError(f"{INPUT}: an empty batch (shape {shape}); send at least one image")
    if shape[0] > model.max_batch:
        raise ClientError(f"{INPUT}: {shape[0]} images in one request, over this server's --max-batch "
                          f"{model.max_batch}; split the batch, or start the server with a larger --max-batch",
                          status=413)
    return tuple(shape)


def _binary_data(tensor: dict, raw: bytes, shape: tuple) -> np.ndarray:
    size = _parameters(tensor, INPUT).get("binary_data_size")
    needed = int(np.prod(shape))
    if "data" in tensor or size != len(raw) or size != needed:
        raise ClientError(f"{INPUT}: binary data of {len(raw)} bytes with binary_data_size {size!r}; shape "
                          f"{list(shape)} needs {needed} bytes, declared in parameters.binary_data_size and sent "
                          "after the JSON header (and no \"data\")")
    return np.frombuffer(raw, dtype=np.uint8)


def _json_data(tensor: dict, shape: tuple) -> np.ndarray:
    needed = int(np.prod(shape))
    if "data" not in tensor:
        raise ClientError(f"{INPUT}: no \"data\"; send its {needed} values as a JSON list, or binary data with "
                          f"the {HEADER_LENGTH} header")
    try:
        values = np.asarray(tensor["data"])
    except ValueError:  # a ragged nesting of lists
        values = np.asarray([], dtype=object)
    if values.dtype.kind not in "iu":
        raise ClientError(f"{INPUT}: \"data\" is not a list of integers; UINT8 data is whole numbers 0-255, "
                          "row-major")
    if values.size != needed:
        raise ClientError(f"{INPUT}: \"data\" holds {values.size} values; shape {list(shape)} needs {needed}")
    low, high = int(values.min()), int(values.max())
    if low < UINT8_RANGE[0] or high > UINT8_RANGE[1]:
        raise ClientError(f"{INPUT}: values from {low} to {high}, outside UINT8's 0-255; send pixel values")
    return values.astype(np.uint8)


def _parameters(part: dict, where: str) -> dict:
    parameters = part.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ClientError(f'{where}: "parameters" must be a JSON object, got {parameters!r}')
    return parameters


def _request_id(request: dict) -> str | None:
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ClientError(f'"id": {request_id!r}; a request id is a string')
    return request_id


def _binary_output(request: dict) -> bool:
    """Whether the scores go back as binary data: the output's own ``binary_data`` parameter, else the
    request's ``binary_data_output`` (as Triton decides)."""
    binary = _parameters(request, "the request").get("binary_data_output", False)
    outputs = request.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(output, dict) for output in outputs):
        raise ClientError(f'"outputs" must be a list of requested outputs; ask for {OUTPUT!r} or leave it out')
    for output in outputs:
        if output.get("name") != OUTPUT:
            raise ClientError(f"output {output.get('name')!r}: this model has one output, {OUTPUT!r} (FP32 "
                              "[N, classes])")
        parameters = _parameters(output, OUTPUT)
        if "classification" in parameters:
            raise ClientError(f"{OUTPUT}: the classification extension is not served here; ask for the scores "
                              "and take the top classes from labels.txt")
        binary = parameters.get("binary_data", binary)
    if not isinstance(binary, bool):
        raise ClientError(f"binary_data {binary!r}: true or false")
    return binary

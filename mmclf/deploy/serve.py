"""Serve a finished run here with KServe's own model server: ``python -m mmclf.serve RUN_DIR --port 8080``.

The same Open Inference Protocol (v2) a KServe InferenceService speaks for the run's ONNX model: POST
``/v2/models/<name>/infer`` with one input ``images`` (UINT8, shape [N, H, W, 3], RGB at the run's
``data.image_size``) answers one output ``scores`` (FP32, [N, classes], softmax scores in the order of
the run's ``labels.txt``). A client written against this endpoint works against the cluster's.
The model is the run's exported ``model.onnx``, run by onnxruntime; no torch or mmcls is loaded.
"""
import argparse
import logging
import uuid
from pathlib import Path

import numpy as np

from mmclf.deploy.protocol import INPUT, MODEL_NAME, OUTPUT
from mmclf.errors import ConfigError, StepError, one_line_errors
from mmclf.run.rundir import RunDir

log = logging.getLogger(__name__)


def load_session(run_dir: RunDir):
    """An onnxruntime session of the run's model.onnx, refusing a run without an export."""
    import onnxruntime

    if not run_dir.onnx_model.is_file():
        raise StepError(f"{run_dir.onnx_model}: missing; serve a run whose export step finished "
                        "(runtime.export.onnx=true, the default)")
    return onnxruntime.InferenceSession(str(run_dir.onnx_model), providers=["CPUExecutionProvider"])


def make_model(run_dir: RunDir, name: str):
    """A ``kserve.Model`` answering v2 infer requests with the run's ONNX model."""
    try:
        from kserve import InferOutput, InferRequest, InferResponse, Model
        from kserve.errors import InvalidInput
    except ImportError:
        raise ConfigError("python -m mmclf.serve needs KServe's model server: pip install 'mmclf[serve]'") from None

    session = load_session(run_dir)
    height, width = session.get_inputs()[0].shape[1:3]

    class RunModel(Model):
        def __init__(self):
            super().__init__(name)
            self.ready = True

        def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
            images = _images(payload, InvalidInput)
            if images.shape[1:] != (height, width, 3):
                raise InvalidInput(f"{INPUT}: shape {list(images.shape)}; this model takes [N, {height}, {width}, 3] "
                                   "uint8 RGB images (resize them to the run's data.image_size)")
            scores = session.run([OUTPUT], {INPUT: images})[0]
            output = InferOutput(name=OUTPUT, shape=list(scores.shape), datatype="FP32", data=scores)
            # v2 requests may leave out their id; the response must carry one
            return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=name, infer_outputs=[output])

    return RunModel()


def _images(payload, invalid) -> np.ndarray:
    """The request's ``images`` tensor as uint8, or the error KServe answers with 400."""
    tensors = {tensor.name: tensor for tensor in payload.inputs}
    if INPUT not in tensors or tensors[INPUT].datatype != "UINT8":
        raise invalid(f"send one input named {INPUT!r} of datatype UINT8, shape [N, H, W, 3]; got "
                      f"{[(t.name, t.datatype) for t in payload.inputs]}")
    return np.ascontiguousarray(tensors[INPUT].as_numpy(), dtype=np.uint8)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmclf.serve", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished run's folder (with model.onnx and labels.txt)")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    parser.add_argument("--name", default=MODEL_NAME, help=f"the model's name in /v2/models/<name> (default "
                        f"{MODEL_NAME}, the name an InferenceService of backend.serve serves it under too)")
    args = parser.parse_args(argv)
    with one_line_errors(os_errors=True):
        if not 0 < args.port < 65536:
            raise ConfigError(f"--port {args.port}: give a port from 1 to 65535")
        model = make_model(RunDir(Path(args.run_dir)), args.name)
    from kserve import ModelServer

    ModelServer(http_port=args.port, enable_grpc=False, workers=1).start([model])


if __name__ == "__main__":
    main()

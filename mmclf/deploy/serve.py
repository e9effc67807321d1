"""Serve a finished run here: ``python -m mmclf.serve RUN_DIR [--host 127.0.0.1] [--port 8080]``.

The Open Inference Protocol (v2) as Triton speaks it for the run's ONNX model on a KServe
InferenceService (mmclf/deploy/v2.py): health, server and model metadata, and POST
``/v2/models/<name>/infer`` with one input ``images`` (UINT8, [N, H, W, 3], RGB squares of the run's
stored size, mmclf/data/views.py) answering one output ``scores`` (FP32, [N, classes], softmax scores in the order of
the run's ``labels.txt``), as JSON or binary tensor data. A client written against this endpoint works
against the cluster's. The model is the run's exported ``model.onnx`` under onnxruntime; no torch or mmcls
is loaded. Each request's batch and body are bounded (``--max-batch``), each runs in a worker thread so a
large one does not hold the others, and a refused request logs one line.
"""
import argparse
import logging
import socket
from pathlib import Path

from mmclf.deploy import v2
from mmclf.deploy.protocol import INPUT, MODEL_NAME, OUTPUT
from mmclf.errors import ConfigError, StepError, one_line_errors
from mmclf.run.rundir import RunDir

log = logging.getLogger("mmclf.serve")
DEFAULT_MAX_BATCH = 64  # backend.serve.max_batch_size's default: the same limit as the cluster's Triton model


def load_session(run_dir: RunDir):
    """An onnxruntime session of the run's model.onnx, refusing a run without an export."""
    import onnxruntime

    if not run_dir.onnx_model.is_file():
        raise StepError(f"{run_dir.onnx_model}: missing; serve a run whose export step finished "
                        "(runtime.export.onnx=true, the default)")
    return onnxruntime.InferenceSession(str(run_dir.onnx_model), providers=["CPUExecutionProvider"])


def make_app(run_dir: RunDir, name: str, max_batch: int):
    """The v2 endpoints of the run's model as an ASGI app (Starlette)."""
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route
    except ImportError:
        raise ConfigError("python -m mmclf.serve needs Starlette and uvicorn: pip install 'mmclf[serve]'") from None

    session = load_session(run_dir)
    height, width = session.get_inputs()[0].shape[1:3]
    model = v2.ServedModel(name, height, width, session.get_outputs()[0].shape[1], max_batch)

    def refuse(request, error: v2.ClientError):
        log.warning("%d %s %s: %s", error.status, request.method, request.url.path, error)
        return JSONResponse({"error": str(error)}, status_code=error.status)

    def known(request) -> v2.ClientError | None:
        """The error for a model name or version this server does not serve."""
        asked, version = request.path_params["model"], request.path_params.get("version", v2.VERSION)
        if asked != name or version != v2.VERSION:
            return v2.ClientError(f"no model {asked!r} version {version!r} here; this server serves {name!r} "
                                  f"version {v2.VERSION}", status=404)
        return None

    async def healthy(request):
        return Response(status_code=200)

    async def server_metadata(request):
        from mmclf import __version__

        return JSONResponse({"name": "mmclf", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def model_ready(request):
        error = known(request)
        return refuse(request, error) if error else Response(status_code=200)

    async def model_metadata(request):
        error = known(request)
        return refuse(request, error) if error else JSONResponse(model.metadata())

    def answer(body: bytes, header_length: str | None) -> tuple[bytes, dict]:
        parsed = v2.parse_infer(body, header_length, model)
        scores = session.run([OUTPUT], {INPUT: parsed.images})[0]
        return v2.infer_response(parsed, scores, model)

    async def infer(request):
        try:
            if error := known(request):
                raise error
            body = await bounded_body(request, model)
            content, headers = await run_in_threadpool(answer, body, request.headers.get(v2.HEADER_LENGTH))
        except v2.ClientError as error:
            return refuse(request, error)
        return Response(content, headers=headers)

    model_path = "/v2/models/{model}"
    version_path = model_path + "/versions/{version}"
    routes = [Route("/v2/health/live", healthy), Route("/v2/health/ready", healthy), Route("/v2", server_metadata)]
    for path in (model_path, version_path):
        routes += [Route(path, model_metadata), Route(path + "/ready", model_ready),
                   Route(path + "/infer", infer, methods=["POST"])]
    async def unknown_route(request, error: HTTPException):
        return refuse(request, v2.ClientError(f"{error.detail}; the v2 endpoints are /v2, /v2/health/live|ready, "
                                              f"/v2/models/{name}[/ready] (GET) and /v2/models/{name}/infer (POST)",
                                              status=error.status_code))

    return Starlette(routes=routes, exception_handlers={HTTPException: unknown_route}), model


async def bounded_body(request, model: v2.ServedModel) -> bytes:
    """The request's body, refused (413) as soon as it is over the limit: by its Content-Length before
    reading, and while it streams in when it has none."""
    if request.headers.get("content-encoding", "identity") != "identity":
        raise v2.ClientError(f"Content-Encoding {request.headers['content-encoding']!r}: send the body "
                             "uncompressed", status=415)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > model.max_body_bytes():
        raise model.too_large(int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > model.max_body_bytes():
            raise model.too_large(size)
        chunks.append(chunk)
    return b"".join(chunks)


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound here so that a taken port or unknown host is one line before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({err.strerror or err}); pick a free "
                          "port, or a host address of this machine") from None
    return sock


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmclf.serve", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished run's folder (with model.onnx and labels.txt)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                        "only; 0.0.0.0 for every interface, as in a container)")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    parser.add_argument("--name", default=MODEL_NAME, help=f"the model's name in /v2/models/<name> (default "
                        f"{MODEL_NAME}, the name an InferenceService of backend.serve serves it under too)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="the most images one request "
                        f"may carry (default {DEFAULT_MAX_BATCH}, as backend.serve.max_batch_size on the cluster)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with one_line_errors(os_errors=True):
        if not 0 < args.port < 65536:
            raise ConfigError(f"--port {args.port}: give a port from 1 to 65535")
        if args.max_batch < 1:
            raise ConfigError(f"--max-batch {args.max_batch}: at least 1 image per request")
        app, model = make_app(RunDir(Path(args.run_dir)), args.name, args.max_batch)
        sock = listening_socket(args.host, args.port)
    import uvicorn

    log.info("serving %s as %r on http://%s:%d/v2/models/%s (at most %d images of %dx%d a request)", args.run_dir,
             model.name, args.host, args.port, model.name, model.max_batch, model.height, model.width)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()

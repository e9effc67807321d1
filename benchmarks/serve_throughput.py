"""Served throughput on this CPU side by side in one run: (a) onnxruntime alone on the run's
``model.onnx``, one batch after another in this process, against (b) ``python -m mmclf.serve`` on the
same run and batch over HTTP on loopback, ``--clients`` threads each sending binary v2 requests
one after another; and the latency of one-image requests alone and while maximal requests
(``--max-batch`` images) keep arriving.

    python benchmarks/serve_throughput.py                    # trains a 1-epoch ResNet-18 first, about a minute
    python benchmarks/serve_throughput.py --run-dir RUN      # a finished run of yours (with model.onnx)

Without ``--run-dir`` a run is set up first (not timed), as benchmarks/onnx_inference.py sets one up. The
images are random uint8 at the run's image size: the time of a forward pass does not depend on what
the pixels show. (a) and (b) alternate over ``--rounds`` rounds of ``--requests`` requests per client;
each figure is the median round. The clients run in this process and share the CPU with the server, as a
client on the same machine does. Prints a table with ratios and writes JSON.
"""
import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime
from onnx_inference import train_run, write_folder  # benchmarks/: the same set-up run
from publish import publish  # benchmarks/: print the table, write the JSON

REPO = Path(__file__).resolve().parent.parent
INPUT, OUTPUT = "images", "scores"


def start_server(run_dir: Path, port: int, max_batch: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "mmclf.serve", str(run_dir), "--port", str(port),
                               "--max-batch", str(max_batch)], cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/v2/health/ready")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.3)
    server.kill()
    sys.exit("serve_throughput: the server did not come up")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def binary_request(images: np.ndarray) -> tuple[bytes, dict]:
    header = json.dumps({"inputs": [{"name": INPUT, "shape": list(images.shape), "datatype": "UINT8",
                                     "parameters": {"binary_data_size": images.nbytes}}],
                         "outputs": [{"name": OUTPUT, "parameters": {"binary_data": True}}]}).encode()
    return header + images.tobytes(), {"Inference-Header-Content-Length": str(len(header)),
                                       "Content-Type": "application/octet-stream"}


def send(connection, body: bytes, headers: dict) -> float:
    """Seconds of one infer request on a kept-alive connection; exits on any answer but 200."""
    started = time.perf_counter()
    connection.request("POST", "/v2/models/mmclf/infer", body, headers)
    response = connection.getresponse()
    answer = response.read()
    if response.status != 200:
        sys.exit(f"serve_throughput: HTTP {response.status}: {answer[:300]!r}")
    return time.perf_counter() - started


def served_img_per_s(port: int, images: np.ndarray, clients: int, requests: int) -> float:
    body, headers = binary_request(images)
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=120) for _ in range(clients)]

    def client(connection):
        for _ in range(requests):
            send(connection, body, headers)

    threads = [threading.Thread(target=client, args=(connection,)) for connection in connections]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return clients * requests * len(images) / (time.perf_counter() - started)


def alone_img_per_s(session, images: np.ndarray, batches: int) -> float:
    started = time.perf_counter()
    for _ in range(batches):
        session.run([OUTPUT], {INPUT: images})
    return batches * len(images) / (time.perf_counter() - started)


def small_latencies(port: int, image: np.ndarray, count: int, large: np.ndarray | None) -> dict:
    """Latency percentiles (ms) of ``count`` one-image requests, with a thread sending ``large``
    requests back to back meanwhile (None: alone); and the large requests' median seconds."""
    stop, large_seconds = threading.Event(), []

    def keep_sending_large():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        body, headers = binary_request(large)
        while not stop.is_set():
            large_seconds.append(send(connection, body, headers))

    sender = threading.Thread(target=keep_sending_large) if large is not None else None
    if sender:
        sender.start()
        time.sleep(0.2)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body, headers = binary_request(image)
    times = sorted(send(connection, body, headers) for _ in range(count))
    stop.set()
    if sender:
        sender.join()
    result = {"p50_ms": 1000 * times[len(times) // 2], "p99_ms": 1000 * times[int(0.99 * (len(times) - 1))]}
    if large_seconds:
        result["large_request_s"] = statistics.median(large_seconds)
    return result


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, help="a finished run with model.onnx (default: train one first)")
    parser.add_argument("--image-size", type=int, default=32, help="the set-up run's image size, px (default 32)")
    parser.add_argument("--batch", type=int, default=16, help="images per request and per batch (default 16)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients (default 8)")
    parser.add_argument("--requests", type=int, default=25, help="requests per client per round (default 25)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--max-batch", type=int, default=64, help="the server's --max-batch (default 64)")
    parser.add_argument("--port", type=int, default=0, help="the server's port (default: a free one)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmarks" / "serve_throughput.json")
    parser.add_argument("overrides", nargs="*", help="mmclf overrides for the set-up run (e.g. a narrower model)")
    return parser.parse_args(argv)


def measure(args, run_dir: Path) -> dict:
    session = onnxruntime.InferenceSession(str(run_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    size = session.get_inputs()[0].shape[1]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
    port = args.port or free_port()
    server = start_server(run_dir, port, args.max_batch)
    try:
        served_img_per_s(port, images, args.clients, 2)  # warm-up (left out)
        alone_img_per_s(session, images, 4)
        rounds = {"alone": [], "served": []}
        for _ in range(args.rounds):
            rounds["alone"].append(alone_img_per_s(session, images, args.clients * args.requests))
            rounds["served"].append(served_img_per_s(port, images, args.clients, args.requests))
        one = images[:1]
        largest = rng.integers(0, 256, (args.max_batch, size, size, 3), dtype=np.uint8)
        latency = {"alone": small_latencies(port, one, 100, None),
                   "beside_max_batch": small_latencies(port, one, 100, largest)}
    finally:
        server.terminate()
        server.wait(30)
    results = {name: statistics.median(values) for name, values in rounds.items()}
    setup = {"run_dir": str(args.run_dir or "generated"), "image_size": size, "batch": args.batch,
             "clients": args.clients, "requests": args.requests, "rounds": args.rounds, "max_batch": args.max_batch,
             "cpus": os.cpu_count(), "onnxruntime": onnxruntime.__version__}
    return {"setup": setup, "img_per_s": results, "rounds": rounds, "ratio": results["served"] / results["alone"],
            "latency_one_image": latency}


def table(report: dict) -> str:
    setup, rates, latency = report["setup"], report["img_per_s"], report["latency_one_image"]
    return "\n".join([
        f"serving on {setup['cpus']} CPUs: batch {setup['batch']} of {setup['image_size']} px, "
        f"{setup['clients']} clients, {setup['rounds']} rounds, medians (onnxruntime {setup['onnxruntime']})",
        f"(a) onnxruntime alone, one batch after another  {rates['alone']:9.1f} img/s",
        f"(b) python -m mmclf.serve over HTTP, binary     {rates['served']:9.1f} img/s",
        f"served / alone: {report['ratio']:.2f}x",
        f"one-image requests alone: p50 {latency['alone']['p50_ms']:.1f} ms, p99 {latency['alone']['p99_ms']:.1f} ms",
        f"one-image requests beside back-to-back {setup['max_batch']}-image requests "
        f"({latency['beside_max_batch']['large_request_s']:.2f} s each): p50 "
        f"{latency['beside_max_batch']['p50_ms']:.1f} ms, p99 {latency['beside_max_batch']['p99_ms']:.1f} ms"])


def main(argv=None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mmclf-serve-bench-") as tmp:
        run_dir = args.run_dir
        if run_dir is None:
            run_dir = Path(tmp) / "run"
            train_run(write_folder(Path(tmp) / "images", 64), run_dir, args.image_size, args.overrides)
        report = measure(args, run_dir)
    return publish(report, table(report), args.out)


if __name__ == "__main__":
    main(sys.argv[1:])

"""python -m mmclf.serve: the Open Inference Protocol (v2) on loopback as Triton speaks it, with the run's
ONNX model. Real HTTP requests to a real server process, from urllib and from Triton's own v2 client
library (tritonclient), which nobody here wrote."""
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.http as triton

from mmclf.data import image_folder
from mmclf.deploy.protocol import MODEL_NAME
from mmclf.deploy.serve import main
from tests.conftest import REPO

MODEL = MODEL_NAME  # the default name, which the InferenceService's Triton model has too
MAX_BATCH = 20
VALUES = 16 * 16 * 3  # one image of the run's data.image_size


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, body=None, headers=None) -> tuple[int, dict]:
    """(status, JSON answer) of a GET, or of a POST of ``body`` (bytes as they are, else as JSON)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def server(folder_run, tmp_path_factory):
    """The server's URL and its log file; it listens where it does by default (no --host)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "mmclf.serve", str(folder_run), "--port", str(port),
                                    "--max-batch", str(MAX_BATCH)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if call(f"{url}/v2/health/ready")[0] == 200:
                break
        except OSError:  # not listening yet
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail(f"the server did not come up: {log.read_text()[-3000:]}")
    yield url, log, port
    process.terminate()
    process.wait(30)


def test_a_triton_client_discovers_the_model_and_infers_in_binary_and_json(server, folder_run, images):
    url, _, _ = server
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata(MODEL)
    assert metadata["platform"] == "onnxruntime_onnx" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 16, 16, 3]}]
    assert metadata["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}]
    expected = json.loads((folder_run / "predictions.json").read_text())
    batch = np.stack([image_folder.decode(images / name, 16, keep_aspect=False) for name in expected["files"]])
    spec = metadata["inputs"][0]  # what the client learnt from the metadata, not what this test knows
    for binary in (True, False):  # JSON: the client sends its body with no Content-Type
        tensor = triton.InferInput(spec["name"], list(batch.shape), spec["datatype"])
        tensor.set_data_from_numpy(batch, binary_data=binary)
        output = triton.InferRequestedOutput(metadata["outputs"][0]["name"], binary_data=binary)
        scores = client.infer(MODEL, [tensor], outputs=[output], request_id="r1").as_numpy("scores")
        assert scores.dtype == np.float32 and scores.shape == (18, 3)
        assert scores.argmax(axis=1).tolist() == expected["pred_label"]
        assert scores.max(axis=1) == pytest.approx(expected["pred_score"], abs=1e-4)


def infer_request(images: np.ndarray) -> dict:
    return {"inputs": [{"name": "images", "shape": list(images.shape), "datatype": "UINT8",
                        "data": images.flatten().tolist()}]}


def test_v2_infer_answers_the_runs_own_test_predictions(server, folder_run, images):
    url, _, _ = server
    expected = json.loads((folder_run / "predictions.json").read_text())
    batch = np.stack([image_folder.decode(images / name, 16, keep_aspect=False) for name in expected["files"]])
    status, body = call(f"{url}/v2/models/{MODEL}/infer", infer_request(batch))
    assert status == 200, body
    (output,) = body["outputs"]
    assert output["name"] == "scores" and output["datatype"] == "FP32" and output["shape"] == [18, 3]
    scores = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    assert scores.argmax(axis=1).tolist() == expected["pred_label"]
    assert scores.max(axis=1) == pytest.approx(expected["pred_score"], abs=1e-4)
    labels = (folder_run / "labels.txt").read_text().splitlines()
    assert labels == expected["classes"] == ["cat", "dog", "owl"]


def images_tensor(shape, data, datatype="UINT8", **extra) -> dict:
    return {"inputs": [{"name": "images", "shape": shape, "datatype": datatype, "data": data, **extra}]}


def binary_body(declared: int, sent: int) -> tuple[bytes, dict]:
    header = json.dumps({"inputs": [{"name": "images", "shape": [1, 16, 16, 3], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": declared}}]}).encode()
    return header + bytes(sent), {"Inference-Header-Content-Length": str(len(header))}


ONE = [0] * VALUES
MALFORMED = {  # name: (body, headers, status, what the one-line answer must name)
    "empty batch": (images_tensor([0, 16, 16, 3], []), {}, 400, "empty batch"),
    "data shorter than the shape": (images_tensor([1, 16, 16, 3], [1] * 5), {}, 400, "holds 5 values"),
    "values over uint8": (images_tensor([1, 16, 16, 3], [300] * VALUES), {}, 400, "outside UINT8's 0-255"),
    "negative values": (images_tensor([1, 16, 16, 3], [-1] * VALUES), {}, 400, "outside UINT8's 0-255"),
    "non-numeric data": (images_tensor([1, 16, 16, 3], ["a"] * VALUES), {}, 400, "not a list of integers"),
    "fractional data": (images_tensor([1, 16, 16, 3], [0.5] * VALUES), {}, 400, "not a list of integers"),
    "ragged data": (images_tensor([1, 16, 16, 3], [[1, 2], [3]]), {}, 400, "not a list of integers"),
    "no data": ({"inputs": [{"name": "images", "shape": [1, 16, 16, 3], "datatype": "UINT8"}]}, {}, 400,
                'no "data"'),
    "wrong datatype": (images_tensor([1, 16, 16, 3], ONE, "FP32"), {}, 400, "send UINT8"),
    "wrong rank": (images_tensor([16, 16, 3], ONE), {}, 400, "[N, 16, 16, 3]"),
    "wrong size": (images_tensor([1, 20, 20, 3], [0] * 1200), {}, 400, "resize the images"),
    "shape not a list": (images_tensor("1x16x16x3", ONE), {}, 400, "[N, 16, 16, 3]"),
    "missing input": ({"inputs": []}, {}, 400, "exactly one input, 'images'"),
    "extra input": ({"inputs": [images_tensor([1, 16, 16, 3], ONE)["inputs"][0], {"name": "x"}]}, {}, 400,
                    "exactly one input, 'images'"),
    "unknown output": ({**images_tensor([1, 16, 16, 3], ONE), "outputs": [{"name": "logits"}]}, {}, 400,
                       "one output, 'scores'"),
    "body not json": (b"hello", {}, 400, "not JSON"),
    "json but not an object": (b"[1, 2]", {}, 400, "not an object"),
    "binary data shorter than declared": (*binary_body(VALUES, 10), 400, "needs 768 bytes"),
    "header length past the body": (b"{}", {"Inference-Header-Content-Length": "99"}, 400,
                                    "Inference-Header-Content-Length"),
    "batch over --max-batch": (images_tensor([MAX_BATCH + 1, 16, 16, 3], [0]), {}, 413, f"--max-batch {MAX_BATCH}"),
    "body over the limit": (b" " * (MAX_BATCH * VALUES * 6 + 70000), {}, 413, "--max-batch"),
    "compressed body": (b"x", {"Content-Encoding": "gzip"}, 415, "uncompressed"),
    "unknown model": ("other", {}, 404, "serves 'mmclf'"),
}


def test_every_malformed_request_is_a_4xx_naming_the_fix_and_logs_one_line(server):
    url, log, _ = server
    logged_before = log.read_text().splitlines()
    for name, (body, headers, status, named) in MALFORMED.items():
        target = f"{url}/v2/models/{body if isinstance(body, str) else MODEL}/infer"
        answer = call(target, infer_request(np.zeros((1, 16, 16, 3), np.uint8)) if isinstance(body, str) else body,
                      headers)
        assert answer[0] == status and named in answer[1]["error"], (name, answer)
        assert "\n" not in answer[1]["error"], name
    assert call(f"{url}/v2/models/{MODEL}/infer", infer_request(np.zeros((2, 16, 16, 3), np.uint8)))[0] == 200
    assert call(f"{url}/v2/models/{MODEL}/infer")[0] == 405  # a GET of the infer endpoint
    new_lines = log.read_text().splitlines()[len(logged_before):]
    assert len(new_lines) == len(MALFORMED) + 1, new_lines  # one line each, the 405's included
    assert not any("Traceback" in line or line.startswith(" ") for line in new_lines), new_lines


def test_a_request_of_max_batch_images_is_served(server):
    url, _, _ = server
    status, body = call(f"{url}/v2/models/{MODEL}/infer", infer_request(np.zeros((MAX_BATCH, 16, 16, 3), np.uint8)))
    assert status == 200 and body["outputs"][0]["shape"] == [MAX_BATCH, 3]


def listening_address(port: int) -> str:
    """The address a TCP socket of this machine listens on at ``port``, read from /proc/net/tcp."""
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, local_port = local.split(":")
        if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
            return socket.inet_ntoa(bytes.fromhex(address)[::-1])
    raise AssertionError(f"nothing listens on port {port}")


def test_by_default_the_server_listens_on_loopback_only(server):
    assert listening_address(server[2]) == "127.0.0.1"


def test_a_port_already_taken_is_refused_in_one_line(folder_run, server, capsys):
    with pytest.raises(SystemExit) as exited:
        main([str(folder_run), "--port", str(server[2])])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmclf: error:")]
    assert exited.value.code == 2 and len(errors) == 1 and f"--port {server[2]}: cannot listen there" in errors[0]


def test_a_run_without_an_export_is_refused_in_one_line(folder_run, tmp_path, capsys):
    run_dir = shutil.copytree(folder_run, tmp_path / "run", symlinks=True)
    (run_dir / "model.onnx").unlink()
    with pytest.raises(SystemExit) as exited:  # the CLI's own main, in this process: nothing is served
        main([str(run_dir), "--port", str(free_port())])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmclf: error:")]
    assert exited.value.code == 2 and len(errors) == 1 and "model.onnx: missing" in errors[0]


def docs_client(page: str, after: str) -> str:
    """The first Python block after ``after`` on a docs page, as printed there."""
    text = (REPO / "docs" / page).read_text()
    start = text.index("```python\n", text.index(after)) + len("```python\n")
    return text[start:text.index("```", start)]


def run_client_on_two_test_images(code: str, folder_run, images, tmp_path, monkeypatch) -> list[str]:
    """The labels the run predicts for its first two test images, copied as a.jpg and b.png."""
    expected = json.loads((folder_run / "predictions.json").read_text())
    shutil.copy(images / expected["files"][0], tmp_path / "a.jpg")  # any format: decode reads the content
    shutil.copy(images / expected["files"][1], tmp_path / "b.png")
    shutil.copy(folder_run / "labels.txt", tmp_path / "labels.txt")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs", "exec"), {})
    return [expected["classes"][label] for label in expected["pred_label"][:2]]


def test_the_docs_client_gets_the_runs_labels_from_the_local_server(server, folder_run, images, tmp_path,
                                                                     monkeypatch, capsys):
    code = docs_client("kubeflow/serving.md", "**Requests** speak KServe's Open Inference Protocol")
    code = code.replace('URL = "http://NAME.NAMESPACE.example.com"', f'URL = "{server[0]}"', 1)
    code = code.replace("decode(path, 32,", "decode(path, 16,", 1)  # the run's data.image_size
    names = run_client_on_two_test_images(code, folder_run, images, tmp_path, monkeypatch)
    assert capsys.readouterr().out.strip() == str(names)


def test_the_docs_triton_client_finds_the_model_in_its_metadata(server, folder_run, images, tmp_path, monkeypatch,
                                                                capsys):
    code = docs_client("using-the-model.md", "Triton's own client library finds all of it")
    code = code.replace('"localhost:8080"', f'"127.0.0.1:{server[2]}"', 1)
    names = run_client_on_two_test_images(code, folder_run, images, tmp_path, monkeypatch)
    assert capsys.readouterr().out.strip() == str(names)

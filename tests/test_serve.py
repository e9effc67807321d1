"""python -m mmclf.serve: KServe's own model server on loopback, answering the Open Inference Protocol (v2)
with the run's ONNX model, as an InferenceService would. Real HTTP requests, real server process."""
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

from mmclf.data import image_folder
from mmclf.deploy.protocol import MODEL_NAME
from mmclf.deploy.serve import main
from tests.conftest import REPO

MODEL = MODEL_NAME  # the default name, which the InferenceService's Triton model has too


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, body=None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def server(folder_run):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "mmclf.serve", str(folder_run), "--port", str(port)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if call(f"{url}/v2/models/{MODEL}/ready")[0] == 200:
                break
        except OSError:  # not listening yet
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"the server did not come up: {process.communicate()[0][-3000:]}")
    yield url
    process.terminate()
    process.wait(30)


def infer_request(images: np.ndarray) -> dict:
    return {"inputs": [{"name": "images", "shape": list(images.shape), "datatype": "UINT8",
                        "data": images.flatten().tolist()}]}


def test_v2_infer_answers_the_runs_own_test_predictions(server, folder_run, images):
    expected = json.loads((folder_run / "predictions.json").read_text())
    batch = np.stack([image_folder.decode(images / name, 16) for name in expected["files"]])
    status, body = call(f"{server}/v2/models/{MODEL}/infer", infer_request(batch))
    assert status == 200, body
    (output,) = body["outputs"]
    assert output["name"] == "scores" and output["datatype"] == "FP32" and output["shape"] == [18, 3]
    scores = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    assert scores.argmax(axis=1).tolist() == expected["pred_label"]
    assert scores.max(axis=1) == pytest.approx(expected["pred_score"], abs=1e-4)
    labels = (folder_run / "labels.txt").read_text().splitlines()
    assert labels == expected["classes"] == ["cat", "dog", "owl"]


def test_a_request_of_the_wrong_size_is_a_400_that_says_what_fits(server):
    status, body = call(f"{server}/v2/models/{MODEL}/infer", infer_request(np.zeros((1, 20, 20, 3), np.uint8)))
    assert status == 400 and "[N, 16, 16, 3]" in body["error"]
    status, body = call(f"{server}/v2/models/{MODEL}/infer", {"inputs": [
        {"name": "images", "shape": [1, 16, 16, 3], "datatype": "FP32", "data": [0.0] * 768}]})
    assert status == 400 and "UINT8" in body["error"]


def test_a_run_without_an_export_is_refused_in_one_line(folder_run, tmp_path, capsys):
    run_dir = shutil.copytree(folder_run, tmp_path / "run", symlinks=True)
    (run_dir / "model.onnx").unlink()
    with pytest.raises(SystemExit) as exited:  # the CLI's own main, in this process: nothing is served
        main([str(run_dir), "--port", str(free_port())])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmclf: error:")]
    assert exited.value.code == 2 and len(errors) == 1 and "model.onnx: missing" in errors[0]


def readme_client() -> str:
    """The docs' Python client (docs/kubeflow/serving.md, "Requests"), as printed there."""
    page = (REPO / "docs" / "kubeflow" / "serving.md").read_text()
    after = page.index("**Requests** speak KServe's Open Inference Protocol")
    start = page.index("```python\n", after) + len("```python\n")
    return page[start:page.index("```", start)]


def test_the_readmes_client_gets_the_runs_labels_from_the_local_server(server, folder_run, images, tmp_path,
                                                                        monkeypatch, capsys):
    expected = json.loads((folder_run / "predictions.json").read_text())
    shutil.copy(images / expected["files"][0], tmp_path / "a.jpg")  # any format: decode reads the content
    shutil.copy(images / expected["files"][1], tmp_path / "b.png")
    shutil.copy(folder_run / "labels.txt", tmp_path / "labels.txt")
    monkeypatch.chdir(tmp_path)
    code = readme_client()
    code = code.replace('URL = "http://NAME.NAMESPACE.example.com"', f'URL = "{server}"', 1)
    code = code.replace("decode(path, 32)", "decode(path, 16)", 1)  # the run's data.image_size
    exec(compile(code, "README.md", "exec"), {})
    names = [expected["classes"][label] for label in expected["pred_label"][:2]]
    assert capsys.readouterr().out.strip() == str(names)

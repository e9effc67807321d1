"""mmclf.models.pretrained with real parts: a loopback HTTP server serving checkpoints named as mmcls's zoo names
them, mmcls classifiers built and saved by mmcv, and mmcv's own Pretrained init_cfg loading them."""
import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import torch

from mmclf.errors import ConfigError, DataError
from mmclf.models import pretrained, zoo
from mmclf.run.rundir import RunDir
from tests.conftest import closed_port_url
from tests.loopback import LoopbackServer

SOURCE_CLASSES, TARGET_CLASSES = 5, 3


def tiny_classifier(num_classes: int, backbone_init_cfg=None, backbone_type="ResNet"):
    """mmcls's ResNet-18, 8 channels wide, with a linear head: the same code as the full one, in milliseconds."""
    from mmcls.models import build_classifier

    backbone = dict(type=backbone_type, depth=18, stem_channels=8, base_channels=8)
    if backbone_init_cfg is not None:
        backbone["init_cfg"] = backbone_init_cfg
    return build_classifier(dict(type="ImageClassifier", backbone=backbone, neck=dict(type="GlobalAveragePooling"),
                                 head=dict(type="LinearClsHead", num_classes=num_classes, in_channels=64)))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A trained-looking source model and its checkpoint as mmcls publishes them (state_dict + plain meta),
    stored under the name mmcls would give it (``<name>_<date>-<sha256 prefix>.pth``)."""
    from mmcv.runner import save_checkpoint

    model = tiny_classifier(SOURCE_CLASSES)
    model.init_weights()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor))  # unlike any fresh init
    folder = tmp_path_factory.mktemp("source")
    save_checkpoint(model, str(folder / "ckpt.pth"), meta={"CLASSES": [f"c{i}" for i in range(SOURCE_CLASSES)],
                                                            "epoch": 3, "config": "model = dict(...)"})
    data = (folder / "ckpt.pth").read_bytes()
    name = f"resnet18_tiny_20240101-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (folder / name).write_bytes(data)
    return model, folder / name


@dataclass
class FileServer(LoopbackServer):
    """Serves ``files`` (URL path -> bytes) over real HTTP on 127.0.0.1, counting the requests; the
    ``cut_off`` paths announce more bytes than they send, as a connection lost mid-download does."""

    files: dict = field(default_factory=dict)
    cut_off: tuple = ()
    requests: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()
        self._serve(FileHandler)


class FileHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        fake = self.server.fake
        with fake._lock:
            fake.requests += 1
        body = fake.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        announced = len(body) + (1000 if self.path in fake.cut_off else 0)
        self.send_header("Content-Length", str(announced))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet: the tests say what went wrong
        pass


@pytest.fixture
def server(source):
    _, path = source
    with FileServer(files={f"/zoo/{path.name}": path.read_bytes(),
                           "/zoo/resnet18_tiny_20240101-deadbeef.pth": path.read_bytes(),
                           "/zoo/unhashed.pth": path.read_bytes()}, cut_off=("/zoo/unhashed.pth",)) as running:
        yield running


def test_fetch_downloads_once_then_uses_the_cache(server, source, tmp_path):
    _, path = source
    url = f"{server.url}/zoo/{path.name}"
    fetched = pretrained.fetch(url, tmp_path / "cache")
    assert fetched == tmp_path / "cache" / path.name
    assert fetched.read_bytes() == path.read_bytes()
    assert server.requests == 1
    assert pretrained.fetch(url, tmp_path / "cache") == fetched
    assert server.requests == 1  # verified from the cache, not downloaded again
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [path.name]  # no temp file left


def test_a_damaged_cached_file_is_downloaded_again(server, source, tmp_path):
    _, path = source
    cached = tmp_path / path.name
    cached.write_bytes(b"half a checkpoint")
    pretrained.fetch(f"{server.url}/zoo/{path.name}", tmp_path)
    assert server.requests == 1
    assert cached.read_bytes() == path.read_bytes()


def test_a_download_whose_hash_does_not_match_its_name_is_refused(server, source, tmp_path):
    url = f"{server.url}/zoo/resnet18_tiny_20240101-deadbeef.pth"
    got = hashlib.sha256(source[1].read_bytes()).hexdigest()[:8]
    with pytest.raises(DataError) as caught:
        pretrained.fetch(url, tmp_path / "cache")
    message = str(caught.value)
    assert message.startswith(f"model.pretrained: {url} downloaded, but its sha256 starts {got}, not deadbeef ")
    assert "\n" not in message
    assert list((tmp_path / "cache").iterdir()) == []  # nothing partial, nothing wrong


def test_a_cut_off_download_is_refused_even_without_a_hash(server, source, tmp_path):
    size = source[1].stat().st_size
    with pytest.raises(DataError, match=rf"\(the connection closed after {size} of {size + 1000} bytes\)"):
        pretrained.fetch(f"{server.url}/zoo/unhashed.pth", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_http_error_is_one_line(server, tmp_path):
    url = f"{server.url}/zoo/missing-0123abcd.pth"
    with pytest.raises(DataError, match=r"could not download .*missing-0123abcd.pth \(HTTP 404 Not Found\)"):
        pretrained.fetch(url, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_offline_says_where_to_copy_the_file(tmp_path):
    url = f"{closed_port_url()}/zoo/resnet18_20240101-0123abcd.pth"
    cache_path = tmp_path / "cache" / "resnet18_20240101-0123abcd.pth"
    with pytest.raises(DataError) as caught:
        pretrained.fetch(url, tmp_path / "cache")
    message = str(caught.value)
    assert message.startswith(f"model.pretrained: could not download {url} (")
    assert message.endswith(f"); offline, copy the file to {cache_path}") and "\n" not in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_local_path_must_be_a_file(tmp_path, source):
    assert pretrained.fetch(str(source[1]), tmp_path) == source[1]
    for missing in (tmp_path / "nope.pth", tmp_path):
        with pytest.raises(DataError, match=f"model.pretrained={missing}: {missing} is not a file"):
            pretrained.fetch(str(missing), tmp_path / "cache")


def test_resolve_source_and_local_path(tmp_path):
    url = zoo.checkpoint_url("resnet/resnet50_8xb32_in1k")
    assert pretrained.resolve_source("zoo", "resnet/resnet50_8xb32_in1k") == url
    assert pretrained.resolve_source("/ckpt/a.pth", None) == "/ckpt/a.pth"
    with pytest.raises(ConfigError, match=r"model.pretrained=zoo needs model=zoo model.config="):
        pretrained.resolve_source("zoo", None)
    with pytest.raises(ConfigError, match=r"no checkpoint for model.config=lenet/lenet5_mnist"):
        pretrained.resolve_source("zoo", "lenet/lenet5_mnist")
    assert pretrained.local_path(url, tmp_path) == tmp_path / url.rsplit("/", 1)[1]
    assert pretrained.local_path("~/a.pth", tmp_path) == Path.home() / "a.pth"


def assert_backbone_is(model, expected_state: dict):
    state = model.backbone.state_dict()
    assert state.keys() == expected_state.keys()
    for key, value in state.items():
        assert torch.equal(value, expected_state[key]), key


def test_init_cfg_loads_the_backbone_and_leaves_the_head_fresh(source):
    from mmcv.runner.checkpoint import CheckpointLoader

    from mmclf.training.checkpoints import load_from_local_weights_only

    model, path = source
    # mmcv's Pretrained init reads the file through mmclf's weights-only loader
    assert CheckpointLoader._get_checkpoint_loader(str(path)) is load_from_local_weights_only
    target = tiny_classifier(TARGET_CLASSES, pretrained.init_cfg(path))
    target.init_weights()
    assert_backbone_is(target, model.backbone.state_dict())
    fc = target.head.fc
    assert fc.weight.shape == (TARGET_CLASSES, 64)
    assert torch.equal(fc.bias, torch.zeros(TARGET_CLASSES))  # mmcls's Normal(std 0.01) init, bias 0
    assert 0.002 < fc.weight.std() < 0.05
    line = pretrained.describe_load(target, path)
    count = len(model.backbone.state_dict())
    assert line == (f"pretrained: backbone loaded {count} of {count} tensors from {path}; 0 not in the checkpoint "
                    "or of another shape; the head's 2 tensors are trained from scratch")


def test_describe_load_counts_what_did_not_load(source, tmp_path):
    model, path = source
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["state_dict"]["backbone.layer4.1.conv2.weight"]
    checkpoint["state_dict"]["backbone.conv1.weight"] = torch.zeros(8, 3, 3, 3)  # another shape
    bare = tmp_path / "bare.pth"
    torch.save(checkpoint["state_dict"], bare)  # a bare state dict, no "state_dict" key
    target = tiny_classifier(TARGET_CLASSES, pretrained.init_cfg(bare))
    target.init_weights()
    assert not torch.equal(target.backbone.conv1.weight, model.backbone.conv1.weight)
    assert torch.equal(target.backbone.layer1[0].conv1.weight, model.backbone.layer1[0].conv1.weight)
    count = len(model.backbone.state_dict())
    assert pretrained.describe_load(target, bare) == (
        f"pretrained: backbone loaded {count - 2} of {count} tensors from {bare}; 2 not in the checkpoint or of "
        "another shape (conv1.weight, layer4.1.conv2.weight); the head's 2 tensors are trained from scratch")


def test_an_mmclf_run_checkpoint_loads_into_a_backbone(finished_run):
    """``latest.pth`` of a run (a symlink; optimizer state, mmclf's meta) loads through the same init_cfg."""
    latest = RunDir(finished_run).latest_checkpoint
    assert latest.is_symlink()
    checkpoint = torch.load(latest, weights_only=True)
    expected = {key[len("backbone."):]: value for key, value in checkpoint["state_dict"].items()
                if key.startswith("backbone.")}
    target = tiny_classifier(TARGET_CLASSES, pretrained.init_cfg(latest), backbone_type="ResNet_CIFAR")
    target.init_weights()
    assert_backbone_is(target, expected)
    assert "0 not in the checkpoint" in pretrained.describe_load(target, latest)


def test_prepare_data_downloads_model_pretrained_beside_the_data_and_training_uses_it(server, source, tmp_path,
                                                                                        data_root):
    from mmclf.models.config import to_mmcv_config
    from mmclf.steps.prepare_data import prepare_data
    from tests.conftest import compose_cfg, tiny_overrides

    _, path = source
    cfg = compose_cfg([*tiny_overrides(data_root), f"data.cache_dir={tmp_path / 'cache'}",
                       f"model.pretrained={server.url}/zoo/{path.name}"])
    prepare_data(cfg, RunDir(tmp_path / "run"))
    cached = tmp_path / "cache" / "pretrained" / path.name
    assert cached.read_bytes() == path.read_bytes() and server.requests == 1
    init_cfg = to_mmcv_config(cfg, tmp_path / "run").model.backbone.init_cfg
    assert init_cfg.type == "Pretrained" and init_cfg.checkpoint == str(cached)

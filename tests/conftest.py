"""Shared test helpers: compose the real Hydra config and run on tiny synthetic data."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

# One thread per torch process: two pytest workers on two cores, each with torch's default of a thread
# per core (and every subprocess a test starts), oversubscribe the CPUs; the suite ran a fifth slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import mmclf.schema  # noqa: E402,F401  (registers the typed schemas)

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = REPO / "conf"

# mmcls's ResNet-18, 8 channels wide instead of 64: the same code path, 1/64 of the arithmetic,
# 1.5 MB checkpoints instead of 86 MB.
NARROW_MODEL = ["+model.backbone.stem_channels=8", "+model.backbone.base_channels=8", "model.head.in_channels=64"]


def compose_cfg(overrides=(), return_hydra_config=False):
    """The config ``python -m mmclf <overrides>`` would run with (without the hydra node unless asked)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def tiny_overrides(data_root, narrow: bool = True) -> list[str]:
    """One epoch of a (narrow) ResNet-18 on 64 synthetic 16x16 images: a second or two on a CPU.

    ``narrow=False`` keeps the full width, for tests that need its size (a full disk) or its pace
    (a kill in mid-epoch)."""
    return [
        "data=synthetic", "data.num_train=64", "data.num_test=32", f"data.root={data_root}",
        "schedule=quick", "schedule.runner.max_epochs=1", "runtime.log_config.interval=1", "device=cpu",
        *(NARROW_MODEL if narrow else []),
    ]


def digits_overrides(data_root) -> list[str]:
    """``tiny_overrides`` on scikit-learn's digits (all 1,797 images, the digits config's two persistent
    DataLoader workers)."""
    return [o.replace("data=synthetic", "data=digits") for o in tiny_overrides(data_root) if "data.num_" not in o]


def run_cli(*args, cwd=REPO, env=None, timeout=300, module="mmclf"):
    """``python -m MODULE ARGS`` (``mmclf`` unless told) in a subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def closed_port_url() -> str:
    """An http URL on loopback where nothing listens: a port bound, then released."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A data root shared by the session's tests, so synthetic data is written once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, data_root):
    """One finished ``tiny_overrides`` run (backend=local), trained once per session.

    Tests only read it; a test that runs into a run dir again takes ``copy_of_finished_run``."""
    from mmclf.task import run

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run(compose_cfg(tiny_overrides(data_root)), run_dir)
    return run_dir


@pytest.fixture
def copy_of_finished_run(finished_run, tmp_path):
    """A private copy of ``finished_run`` (symlinks such as latest.pth kept as symlinks)."""
    return Path(shutil.copytree(finished_run, tmp_path / "run", symlinks=True))


LOADERS = ["mmcls", "device"]


def two_epochs(data_root, loader=None):
    """The ``tiny_overrides`` config trained for two epochs (on ``data.loader=<loader>`` where given)."""
    return compose_cfg([*tiny_overrides(data_root), "schedule.runner.max_epochs=2",
                        *([f"data.loader={loader}"] if loader else [])])


@pytest.fixture(scope="session", params=LOADERS)
def uninterrupted(request, tmp_path_factory, data_root):
    """(loader, run dir) of an uninterrupted two-epoch run, once per pytest worker and loader: the
    reference a resumed, mended or refused run is compared with. Tests only read it (or copy it)."""
    from mmclf.task import run

    run_dir = tmp_path_factory.mktemp(f"uninterrupted-{request.param}") / "run"
    run(two_epochs(data_root, request.param), run_dir)
    return request.param, run_dir


@pytest.fixture(scope="session")
def two_epoch_run(finished_run, tmp_path_factory, data_root):
    """``finished_run`` trained one epoch more: epoch_1.pth and epoch_2.pth, finished; tests only read it."""
    from mmclf.run.rundir import RunDir
    from mmclf.task import run

    run_dir = shutil.copytree(finished_run, tmp_path_factory.mktemp("two-epochs") / "run", symlinks=True)
    run(two_epochs(data_root), run_dir)
    return RunDir(run_dir)


@pytest.fixture
def copy_of_two_epoch_run(two_epoch_run, tmp_path):
    """A private copy of ``two_epoch_run`` (a RunDir), for a test that damages or runs into it."""
    from mmclf.run.rundir import RunDir

    return RunDir(shutil.copytree(two_epoch_run.path, tmp_path / "run", symlinks=True))


@pytest.fixture
def no_cluster_access(monkeypatch, tmp_path_factory):
    """No kubeconfig, not in a pod, no KFP endpoint: what this machine has, whoever runs the tests."""
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KF_PIPELINES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


IMAGE_FORMATS = ((".png", "RGB"), (".jpg", "L"), (".png", "RGBA"), (".bmp", "P"), (".webp", "RGB"), (".tif", "RGB"))


def write_image_folder(root, classes=("cat", "dog", "owl"), per_split=None, seed=0):
    """Tiny image folders as people have them: ``root/<split>/<class>/<n><ext>``, each class its own
    colour (learnable), mixed formats, modes (RGB, grey, RGBA, palette) and sizes. Returns ``root``."""
    import numpy as np
    from PIL import Image

    per_split = per_split or {"train": 12, "test": 6}
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 226, size=(len(classes), 3))
    for split, count in per_split.items():
        for label, name in enumerate(classes):
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                ext, mode = IMAGE_FORMATS[n % len(IMAGE_FORMATS)]
                size = (int(rng.integers(12, 40)), int(rng.integers(12, 40)))
                pixels = rng.normal(colours[label], 20, size=(size[1], size[0], 3)).clip(0, 255).astype(np.uint8)
                image = Image.fromarray(pixels).convert(mode)
                image.save(folder / f"{n}{ext}")
    return Path(root)


def folder_overrides(root, cache_dir=None) -> list[str]:
    """``tiny_overrides`` on your own images at ``root`` (a narrow ResNet-18, one epoch, 16 px)."""
    return ["data=folder", f"data.root={root}", "data.image_size=16", "data.workers_per_gpu=0",
            "data.persistent_workers=false", *([f"data.cache_dir={cache_dir}"] if cache_dir else []),
            "schedule=quick", "schedule.runner.max_epochs=1", "runtime.log_config.interval=1", "device=cpu",
            *NARROW_MODEL]


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """A session's image folder: 3 classes, 16 training and 6 test images each, mixed formats and modes."""
    return write_image_folder(tmp_path_factory.mktemp("own") / "pets", per_split={"train": 16, "test": 6})


@pytest.fixture(scope="session")
def folder_run(images, tmp_path_factory):
    """One finished 2-epoch run on ``images`` (data=folder); tests only read it."""
    from mmclf.task import run

    run_dir = tmp_path_factory.mktemp("folder-run") / "run"
    run(compose_cfg([*folder_overrides(images), "schedule.runner.max_epochs=2"]), run_dir)
    return run_dir


# pytest-xdist (--dist loadfile) hands out whole files in collection order: a slow file collected last
# leaves one worker running it alone at the end. These files take a minute or more each: first.
SLOWEST_FILES = ("test_dist.py", "test_sweeps.py", "test_resume.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name not in SLOWEST_FILES)  # stable: the rest keep their order


@pytest.fixture
def read_only_view(tmp_path):
    """``view(folder)``: ``folder`` mounted read-only at a new path (a bind mount, as a ReadOnlyMany claim
    or an NFS export is mounted in a pod); skipped where mounting is not allowed."""
    mounted = []

    def view(folder):
        mount_point = tmp_path / f"read-only-{len(mounted)}"
        mount_point.mkdir()
        bind = subprocess.run(["mount", "--bind", str(folder), str(mount_point)], capture_output=True)
        if bind.returncode != 0:
            pytest.skip("cannot bind-mount a folder read-only here (needs root)")
        mounted.append(mount_point)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount_point)], check=True)
        return mount_point

    yield view
    for mount_point in mounted:
        subprocess.run(["umount", str(mount_point)], check=True)

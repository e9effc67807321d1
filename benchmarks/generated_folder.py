"""What the data benchmarks (folder_data.py, cache_memory.py) share: a folder of generated image files
as people have them (measured when no ``--root`` is given), ``data=folder`` composed on it, and the
environment of their child interpreters."""
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import mmclf.schema  # noqa: F401  (registers the typed schemas before composing)

REPO = Path(__file__).resolve().parent.parent
SEED = 0
CLASSES = 10
SIDES = (64, 500)  # px: each generated image's width and height are drawn from this range
TEST_SHARE = 0.1  # generated test/ images, as a share of train/ (prepare-data decodes test/ too)


def write_folder(root: Path, num_images: int, classes: int = CLASSES, seed: int = SEED) -> Path:
    """``num_images`` training images (and TEST_SHARE as many test images) as people have them:
    ``root/<split>/<class>/<n>.jpg|png``, each side 64-500 px, three JPEGs (quality 90) to one PNG,
    each class its own colour under a smooth random pattern and a little noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, size=(classes, 3))
    jobs = []
    for split, count in (("train", num_images), ("test", max(classes, round(num_images * TEST_SHARE)))):
        for n in range(count):
            label = n % classes
            jobs.append((Path(root) / split / f"class{label:02d}" / f"{n}{'.png' if n % 4 == 3 else '.jpg'}",
                         label, *rng.integers(SIDES[0], SIDES[1] + 1, size=2), int(rng.integers(1 << 31))))

    def one(job):
        path, label, width, height, image_seed = job
        local = np.random.default_rng(image_seed)
        pattern = Image.fromarray(local.integers(0, 256, size=(6, 6, 3), dtype=np.uint8))
        pattern = np.asarray(pattern.resize((int(width), int(height)), Image.BICUBIC), dtype=np.float32)
        pixels = 0.5 * pattern + 0.5 * colours[label] + local.normal(0, 8, size=pattern.shape)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(one, jobs))
    return Path(root)


def compose_data_cfg(root: Path, image_size: int, cache_dir: Path):
    """``data=folder`` as mmclf composes it, on ``root``, caching into ``cache_dir``."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["data=folder", f"data.root={root}",
                                                       f"data.image_size={image_size}", f"data.cache_dir={cache_dir}"])
    return OmegaConf.to_container(cfg, resolve=True)["data"]


def child_env() -> dict:
    """The environment of a benchmark's child interpreter: it imports mmclf from this checkout."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

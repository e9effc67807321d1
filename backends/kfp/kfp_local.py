"""backend.mode=local: the pipeline on this machine through kfp.local, writing into the run dir."""
import importlib.util
import logging
import re
import sys
import warnings
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from backends.kfp.compiling.compile import pod_config_yaml
from backends.kfp.compiling.parameters import parameter_defaults
from backends.kfp.pipeline import build_pipeline
from mmclf.errors import ConfigError, StepError
from mmclf.run.io import read_json
from mmclf.run.rundir import RunDir

log = logging.getLogger(__name__)


def _hide_docker_folder() -> None:
    """Keep kfp.local from taking this repo's docker/ folder for the docker SDK.

    Run from the repo root, ``import docker`` finds docker/ (the Dockerfile's folder) as a namespace
    package, and kfp.local, which imports the SDK for its DockerRunner, then fails. The SDK is a
    regular package, so a namespace ``docker`` is never it: mark it absent, as kfp.local expects.
    """
    spec = importlib.util.find_spec("docker")
    if spec is not None and spec.origin is None:
        sys.modules["docker"] = None


def run_local(cfg: DictConfig, run_dir: RunDir, arguments: Optional[dict] = None) -> dict:
    """Execute the pipeline here through kfp.local, writing into ``run_dir``; return metrics.json.

    ``arguments``: pipeline parameter values, as a KFP run takes them (the compiled config's otherwise)."""
    from kfp import local

    if cfg.backend.component != "python":
        raise ConfigError("backend.component=container cannot run with backend.mode=local: kfp.local's "
                          "SubprocessRunner runs only Python-function components; use backend.component=python "
                          "here, or backend.mode=compile for the container style")
    run_dir = RunDir(run_dir.path.absolute())
    config_yaml = pod_config_yaml(cfg, str(Path(cfg.data.root).absolute()), on_cluster=False)
    pipeline = build_pipeline(cfg.backend, config_yaml, str(run_dir), parameter_defaults(cfg), on_cluster=False)
    _hide_docker_folder()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_dir.kfp_local))
    log.info("kfp.local: running the pipeline; task outputs under %s", run_dir.kfp_local)
    try:
        with warnings.catch_warnings():
            # kfp.local warns that an image without "python" in its name may lack Python; the
            # subprocess runs this environment's Python, not the image.
            warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
            pipeline(**(arguments or {}))
    except RuntimeError as err:
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # kfp.local colours its messages for terminals
        raise StepError(f"backend.mode=local: {message} (that task's log is printed above)") from None
    return read_json(run_dir.metrics)

"""backend=kfp: the same steps as a Kubeflow pipeline, one pod per step on a shared volume.

mode=compile writes pipeline.yaml (+ a Mermaid picture of the task graph) into the run dir;
mode=submit also starts a run on a KFP API server (backends/kfp_client.py); mode=local executes
the pipeline on this machine through kfp.local, producing the run-dir files backend=local does.
"""
import copy
import importlib.util
import json
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from backends.kfp_checks import check_backend
from backends.kfp_pipeline import build_pipeline, volume_root
from mmclf.errors import ConfigError, StepError
from mmclf.io import read_json, write_text_atomic
from mmclf.schema import plain
from mmclf.steps.metrics import METRICS

log = logging.getLogger(__name__)
PIPELINE_FILE = "pipeline.yaml"
GRAPH_FILE = "pipeline_graph.md"
LOCAL_OUTPUTS = ".kfp_local"  # kfp.local's pipeline_root inside the run dir (hidden, like .hydra)
MAX_PARAMETER_CHARS = 10_000  # KFP's limit on a pipeline parameter value


def pod_config_yaml(cfg: DictConfig, data_root: str) -> str:
    """The resolved config the pods rebuild, with ``data.root`` set to where they find the data.

    It is one line of JSON, which is YAML too (``OmegaConf.create`` reads it back exactly): the kfp
    compiler copies parameter defaults into a comment header of pipeline.yaml, and a multi-line
    default there breaks the file.
    """
    pod_cfg = copy.deepcopy(cfg)
    pod_cfg.data.root = data_root  # before resolving: data paths interpolate ${data.root}
    text = json.dumps(OmegaConf.to_container(pod_cfg, resolve=True, enum_to_str=True))
    if len(text) > MAX_PARAMETER_CHARS:
        raise ConfigError(f"backend=kfp: the resolved config is {len(text):,} characters, but it travels as a KFP "
                          f"pipeline parameter, which holds at most {MAX_PARAMETER_CHARS:,}; drop unused keys "
                          "from your config groups (or run it with backend=local)")
    return text


def _hydra_overrides_and_job() -> tuple[list, Optional[int]]:
    """Hydra's task overrides and multirun job number; none when called outside Hydra (tests, notebooks)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return [], None
    hydra = HydraConfig.get()
    job = hydra.job.num if hydra.mode == RunMode.MULTIRUN else None
    return list(hydra.overrides.task), job


def sweep_experiment() -> Optional[str]:
    """In a multirun, a KFP experiment name for the whole sweep: ``mmclf-<sweep dir's last two parts>``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    parts = Path(HydraConfig.get().sweep.dir).parts[-2:]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(["mmclf", *parts]))


def run_names(cfg: DictConfig) -> tuple[str, str]:
    """(name, display name): ``mmclf-resnet18-cifar10-<time>[-<job>]`` and the same plus the job's overrides.

    The name, safe in a path, names the run's folder on the volume; the display name is the KFP run's.
    """
    backbone = cfg.model.get("backbone") or {}
    model = f"{backbone.get('type', '').split('_')[0]}{backbone.get('depth', '')}" or cfg.model.type
    overrides, job = _hydra_overrides_and_job()
    name = f"mmclf-{model}-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}" + (f"-{job}" if job is not None else "")
    name = re.sub(r"[^a-z0-9-]+", "-", name.lower())
    # backend.* and hydra.* overrides say where and how a job ran, not what it trained.
    shown = [o for o in overrides if not o.lstrip("+~").startswith(("backend.", "backend=", "hydra."))]
    return name, " ".join([name, *shown])


def compile_pipeline(pipeline, run_dir: Path) -> Path:
    """Compile to ``<run_dir>/pipeline.yaml`` (atomically) and draw its task graph beside it."""
    from kfp import compiler

    run_dir.mkdir(parents=True, exist_ok=True)
    path, tmp = run_dir / PIPELINE_FILE, run_dir / ".pipeline.tmp.yaml"
    compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(tmp))
    os.replace(tmp, path)
    write_text_atomic(run_dir / GRAPH_FILE, mermaid_graph(path))
    return path


def _ancestors(tasks: dict, name: str) -> set:
    direct = set(tasks[name].get("dependentTasks", []))
    return direct.union(*(_ancestors(tasks, up) for up in direct))


def mermaid_graph(pipeline_file: Path) -> str:
    """A markdown page with a Mermaid flowchart of the compiled pipeline's tasks and their order.

    Edges implied by others are left out (every task depends on create-volume, whose claim it mounts).
    """
    import yaml

    spec = next(yaml.safe_load_all(pipeline_file.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    node = {name: name.replace("-", "_") for name in tasks}
    lines = ["flowchart TD"]
    lines += [f'  {node[name]}["{task["taskInfo"]["name"]}"]' for name, task in tasks.items()]
    for name, task in tasks.items():
        ups = task.get("dependentTasks", [])
        implied = set().union(*(_ancestors(tasks, up) for up in ups))
        lines += [f"  {node[up]} --> {node[name]}" for up in ups if up not in implied]
    title = spec["pipelineInfo"]["name"]
    return f"# Pipeline `{title}`: task graph\n\nCompiled into `{PIPELINE_FILE}`.\n\n```mermaid\n" + \
        "\n".join(lines) + "\n```\n"


def _print_how_to_run(pipeline_file: Path, image: str) -> None:
    print(f"pipeline written: {pipeline_file} (task graph: {pipeline_file.parent / GRAPH_FILE})\n"
          "run it on Kubeflow Pipelines, either:\n"
          "  - KFP UI: Pipelines > Upload pipeline > choose pipeline.yaml, then Create run "
          "(its parameters come pre-filled), or\n"
          "  - python -m mmclf backend=kfp backend.mode=submit backend.host=https://<kfp-api-host> "
          "[the same overrides]\n"
          f"every pod runs the image {image}: build and push it first (make image IMAGE={image})")


def _hide_docker_folder() -> None:
    """Keep kfp.local from taking this repo's docker/ folder for the docker SDK.

    Run from the repo root, ``import docker`` finds docker/ (the Dockerfile's folder) as a namespace
    package, and kfp.local, which imports the SDK for its DockerRunner, then fails. The SDK is a
    regular package, so a namespace ``docker`` is never it: mark it absent, as kfp.local expects.
    """
    spec = importlib.util.find_spec("docker")
    if spec is not None and spec.origin is None:
        sys.modules["docker"] = None


def run_local(cfg: DictConfig, run_dir: Path) -> dict:
    """Execute the pipeline here through kfp.local, writing into ``run_dir``; return metrics.json."""
    from kfp import local

    if plain(cfg.backend.component) != "python":
        raise ConfigError("backend.component=container cannot run with backend.mode=local: kfp.local's "
                          "SubprocessRunner runs only Python-function components; use backend.component=python "
                          "here, or backend.mode=compile for the container style")
    run_dir = run_dir.absolute()
    arguments = {"config_yaml": pod_config_yaml(cfg, str(Path(cfg.data.root).absolute())), "run_dir": str(run_dir)}
    pipeline = build_pipeline(cfg.backend, **arguments, on_cluster=False)
    _hide_docker_folder()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_dir / LOCAL_OUTPUTS))
    log.info("kfp.local: running the pipeline; task outputs under %s", run_dir / LOCAL_OUTPUTS)
    try:
        with warnings.catch_warnings():
            # kfp.local warns that an image without "python" in its name may lack Python; the
            # subprocess runs this environment's Python, not the image.
            warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
            pipeline()
    except RuntimeError as err:
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # kfp.local colours its messages for terminals
        raise StepError(f"backend.mode=local: {message} (that task's log is printed above)") from None
    return read_json(run_dir / METRICS)


class KfpBackend:
    """Compile, submit or locally execute the pipeline built from ``cfg``."""

    def __init__(self, **_backend_options):
        """Hydra passes the fields of cfg.backend; run() reads that same node from cfg, so none is kept."""

    def run(self, cfg: DictConfig, run_dir: Path) -> Optional[dict]:
        """Return the metrics dict (mode=local, or submit with backend.wait), else None: no run finished here."""
        backend = cfg.backend
        check_backend(backend)
        mode = plain(backend.mode)
        if mode == "local":
            return run_local(cfg, Path(run_dir))
        name, display_name = run_names(cfg)
        root = volume_root(backend.volume)
        arguments = {"config_yaml": pod_config_yaml(cfg, f"{root}/data"), "run_dir": f"{root}/runs/{name}"}
        pipeline_file = compile_pipeline(build_pipeline(backend, **arguments), Path(run_dir))
        if mode == "compile":
            _print_how_to_run(pipeline_file, backend.image)
            return None
        from backends.kfp_client import submit

        if backend.experiment is None:  # all runs of a sweep go to one experiment named after it
            backend = OmegaConf.merge(backend, {"experiment": sweep_experiment()})
        return submit(pipeline_file, backend, display_name, arguments)

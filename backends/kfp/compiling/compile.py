"""Compile: the config parameter every pod rebuilds, pipeline.yaml and a picture of its task graph."""
import json
import os
import re
from pathlib import PurePosixPath

from omegaconf import DictConfig, OmegaConf

from backends.kfp.compiling.naming import STORAGE_CLASS_PARAMETER
from backends.kfp.compiling.parameters import PARAMETER_KEYS
from mmclf.errors import ConfigError
from mmclf.run.io import write_text_atomic
from mmclf.run.rundir import RunDir

MAX_PARAMETER_CHARS = 10_000  # KFP's limit on a pipeline parameter value


def _keep_links(raw, resolved, keys: tuple[str, ...]):
    """``resolved``, except where ``raw`` is exactly an interpolation of one of ``keys`` (``${key}``):
    that stays an interpolation, for the pod to resolve after applying its pipeline parameters."""
    if isinstance(raw, dict):
        return {name: _keep_links(raw[name], resolved[name], keys) for name in raw}
    if isinstance(raw, list):
        return [_keep_links(item, value, keys) for item, value in zip(raw, resolved, strict=True)]
    link = re.fullmatch(r"\$\{([\w.-]+)\}", raw) if isinstance(raw, str) else None
    return raw if link and link.group(1) in keys else resolved


def processes_per_pod(cfg: DictConfig) -> int:
    """``dist.nproc_per_node`` for a train pod (or TrainJob node) of ``backend.resources``: ``auto`` is
    its accelerator count, and 1 when it requests none: a pod that asked for no GPU may still see a
    node's GPUs (the NVIDIA runtime's NVIDIA_VISIBLE_DEVICES=all) and must not start a rank per GPU."""
    nproc, resources = cfg.dist.nproc_per_node, cfg.backend.resources
    if nproc != "auto":
        return int(nproc)
    if cfg.device == "cpu":  # as on this machine: auto is one process on the CPU
        return 1
    return resources.accelerator_count if resources.accelerator_count > 0 and resources.accelerator_type else 1


def is_own_images(cfg: DictConfig) -> bool:
    """data=folder: images the user brings, which must already be on the volume."""
    return cfg.data.name == "folder"


def images_root(root: str, volume_data: str) -> str:
    """Where the pods find your own images: a relative ``data.root`` is a folder in the volume's data folder
    (``<mount>/data/<data.root>``); an absolute one stays as it is (paths.py refuses it off the volume)."""
    return root if PurePosixPath(root).is_absolute() else f"{volume_data}/{root}"


def pod_config(cfg: DictConfig, data_root: str, on_cluster: bool = True) -> dict:
    """The config the pods rebuild, with ``data.root`` set to where they find the data; resolved but for
    the links to the typed pipeline parameters' keys (parameters.py). ``on_cluster``: with
    ``dist.nproc_per_node`` decided here (processes_per_pod), not by whatever GPUs a pod happens to see;
    kfp.local runs the pods on this machine, where ``auto`` means this machine's GPUs."""
    # Hydra's own node, present while the validation callback runs, is no business of the pods.
    pod_cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    # before resolving: data paths interpolate ${data.root}
    pod_cfg.data.root = images_root(cfg.data.root, data_root) if on_cluster and is_own_images(cfg) else data_root
    if on_cluster:
        pod_cfg.dist.nproc_per_node = processes_per_pod(cfg)
    return _keep_links(OmegaConf.to_container(pod_cfg, resolve=False, enum_to_str=True),
                       OmegaConf.to_container(pod_cfg, resolve=True, enum_to_str=True), PARAMETER_KEYS)


def pod_config_yaml(cfg: DictConfig, data_root: str, on_cluster: bool = True) -> str:
    """``pod_config`` as one line of JSON, which is YAML too (``OmegaConf.create`` reads it back exactly):
    the kfp compiler copies parameter defaults into a comment header of pipeline.yaml, and a multi-line
    default there breaks the file."""
    text = json.dumps(pod_config(cfg, data_root, on_cluster))
    if len(text) > MAX_PARAMETER_CHARS:
        raise ConfigError(f"backend=kfp: the resolved config is {len(text):,} characters, but it travels as a KFP "
                          f"pipeline parameter, which holds at most {MAX_PARAMETER_CHARS:,}; drop unused keys "
                          "from your config groups (or run it with backend=local)")
    return text


def compile_pipeline(pipeline, run_dir: RunDir):
    """Compile to ``<run_dir>/pipeline.yaml`` (atomically) and draw its task graph beside it."""
    from kfp import compiler

    run_dir.path.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".tmp.{RunDir.PIPELINE}"  # the compiler insists on a .yaml name
    compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(tmp))
    os.replace(tmp, run_dir.pipeline)
    write_text_atomic(run_dir.pipeline_graph, mermaid_graph(run_dir.pipeline))
    return run_dir.pipeline


def _ancestors(tasks: dict, name: str) -> set:
    direct = set(tasks[name].get("dependentTasks", []))
    return direct.union(*(_ancestors(tasks, up) for up in direct))


def _flat_tasks(spec: dict) -> dict:
    """The pipeline's tasks by name, an exit handler's group opened: a task after the group (the exit
    task) comes after the group's last tasks."""
    tasks = {}
    for name, task in spec["root"]["dag"]["tasks"].items():
        group = spec["components"][task["componentRef"]["name"]].get("dag")
        if group is None:
            tasks[name] = task
            continue
        inner = group["tasks"]
        last = [n for n in inner if not any(n in t.get("dependentTasks", []) for t in inner.values())]
        tasks.update(inner)
        for other in spec["root"]["dag"]["tasks"].values():
            if name in other.get("dependentTasks", []):
                other["dependentTasks"] = [d for d in other["dependentTasks"] if d != name] + last
    return tasks


def mermaid_graph(pipeline_file) -> str:
    """A markdown page with a Mermaid flowchart of the compiled pipeline's tasks and their order.

    Edges implied by others are left out (every task depends on create-volume, whose claim it mounts).
    """
    import yaml

    # libyaml's loader where PyYAML has it: the pure-Python one takes a tenth of a second on pipeline.yaml
    spec = next(yaml.load_all(pipeline_file.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    tasks = _flat_tasks(spec)
    node = {name: name.replace("-", "_") for name in tasks}
    lines = ["flowchart TD"]
    lines += [f'  {node[name]}["{task["taskInfo"]["name"]}"]' for name, task in tasks.items()]
    for name, task in tasks.items():
        ups = task.get("dependentTasks", [])
        implied = set().union(*(_ancestors(tasks, up) for up in ups))
        lines += [f"  {node[up]} --> {node[name]}" for up in ups if up not in implied]
    title = spec["pipelineInfo"]["name"]
    return f"# Pipeline `{title}`: task graph\n\nCompiled into `{RunDir.PIPELINE}`.\n\n```mermaid\n" + \
        "\n".join(lines) + "\n```\n"


def print_how_to_run(run_dir: RunDir, image: str, volume_run_dir: str, class_needed: bool) -> None:
    """Where the pipeline is, how to run it, and where each KFP run of it will write."""
    fill_in = f"; fill in its parameter {STORAGE_CLASS_PARAMETER} (kubectl get storageclass)" if class_needed else ""
    print(f"pipeline written: {run_dir.pipeline} (task graph: {run_dir.pipeline_graph})\n"
          "run it on Kubeflow Pipelines, either:\n"
          "  - KFP UI: Pipelines > Upload pipeline > choose pipeline.yaml, then Create run "
          f"(its parameters come pre-filled{fill_in}), or\n"
          "  - python -m mmclf backend=kfp backend.mode=submit backend.host=https://<kfp-api-host> "
          "[the same overrides]\n"
          f"each KFP run writes to {volume_run_dir}-<KFP run id> on the shared volume\n"
          f"every pod runs the image {image}: build and push it first (make image IMAGE={image})")

"""Compile: the config parameter every pod rebuilds, pipeline.yaml and a picture of its task graph."""
import copy
import json
import os

from omegaconf import DictConfig, OmegaConf

from mmclf.errors import ConfigError
from mmclf.io import write_text_atomic
from mmclf.rundir import RunDir

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


def mermaid_graph(pipeline_file) -> str:
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
    return f"# Pipeline `{title}`: task graph\n\nCompiled into `{RunDir.PIPELINE}`.\n\n```mermaid\n" + \
        "\n".join(lines) + "\n```\n"


def print_how_to_run(run_dir: RunDir, image: str) -> None:
    print(f"pipeline written: {run_dir.pipeline} (task graph: {run_dir.pipeline_graph})\n"
          "run it on Kubeflow Pipelines, either:\n"
          "  - KFP UI: Pipelines > Upload pipeline > choose pipeline.yaml, then Create run "
          "(its parameters come pre-filled), or\n"
          "  - python -m mmclf backend=kfp backend.mode=submit backend.host=https://<kfp-api-host> "
          "[the same overrides]\n"
          f"every pod runs the image {image}: build and push it first (make image IMAGE={image})")

"""The step components, in both styles: Python-function (default) and custom container; and the
volume-permissions component.

Either style only forwards to :mod:`backends.kfp.pod`, so a pod runs exactly the step function that
``backend=local`` runs. Component names give the task names of the seed's pipeline: prepare-data,
train, test, produce-metrics; and export (ONNX) before produce-metrics. Every step takes the config,
the run dir and the KFP run id (the folder is ``<run dir>-<run id>``), and the typed pipeline
parameters of parameters.py.
"""
from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Metrics, Model, Output

from backends.kfp.compiling.parameters import RUN_PARAMETERS
from mmclf.run.rundir import RunDir
from mmclf.steps import STEP_NAMES

# Python-function components: KFP embeds each function's source in pipeline.yaml and runs it in
# the project image (which has kfp installed, hence install_kfp_package=False), so each body
# imports what it uses. KFP names a component (and its task) after the function, so each step
# has its own small function rather than one generated from the step table.


def prepare_data(config_yaml: str, run_dir: str, run_id: str, learning_rate: float, epochs: int, batch_size: int,
                 seed: int):
    """Prepare the dataset under data.root and record the run's config.yaml."""
    from backends.kfp.pod import run_in_pod

    run_in_pod("prepare_data", config_yaml, run_dir, run_id, learning_rate=learning_rate, epochs=epochs,
               batch_size=batch_size, seed=seed)


def train(config_yaml: str, run_dir: str, run_id: str, learning_rate: float, epochs: int, batch_size: int, seed: int,
          claim_name: str = ""):
    """Train the model; checkpoints and logs go to <run_dir>/work_dir.
    With backend.distributed=trainjob, a TrainJob on the claim ``claim_name`` trains it."""
    from backends.kfp.pod import run_in_pod

    run_in_pod("train", config_yaml, run_dir, run_id, claim_name=claim_name, learning_rate=learning_rate,
               epochs=epochs, batch_size=batch_size, seed=seed)


def test(config_yaml: str, run_dir: str, run_id: str, learning_rate: float, epochs: int, batch_size: int, seed: int):
    """Evaluate the final checkpoint: eval_result.json and predictions.json."""
    from backends.kfp.pod import run_in_pod

    run_in_pod("test", config_yaml, run_dir, run_id, learning_rate=learning_rate, epochs=epochs,
               batch_size=batch_size, seed=seed)


def export(config_yaml: str, run_dir: str, run_id: str, learning_rate: float, epochs: int, batch_size: int,
           seed: int, model: Output[Model]):
    """Export the model to ONNX (model.onnx, labels.txt; parity with PyTorch measured); the final checkpoint,
    its mmcls config and the ONNX model to the model artifact."""
    from backends.kfp.compiling.outputs import export_model
    from backends.kfp.pod import run_in_pod

    cfg, folder = run_in_pod("export", config_yaml, run_dir, run_id, learning_rate=learning_rate, epochs=epochs,
                             batch_size=batch_size, seed=seed)
    model.metadata.update(export_model(cfg, folder, model.path))


def produce_metrics(config_yaml: str, run_dir: str, run_id: str, learning_rate: float, epochs: int, batch_size: int,
                    seed: int, metrics: Output[Metrics], classification: Output[ClassificationMetrics],
                    report: Output[HTML]):
    """Write metrics.json, plots and report.md; show them in the KFP UI."""
    from backends.kfp.compiling.outputs import log_kfp_metrics, write_html_report
    from backends.kfp.pod import run_in_pod

    _, folder = run_in_pod("metrics", config_yaml, run_dir, run_id, learning_rate=learning_rate, epochs=epochs,
                           batch_size=batch_size, seed=seed)
    log_kfp_metrics(folder, metrics, classification)
    write_html_report(folder, report.path)


PYTHON_FUNCTIONS = {"prepare_data": prepare_data, "train": train, "test": test, "export": export,
                    "metrics": produce_metrics}
POD_COMMAND = ["python", "-m", "backends.kfp.pod"]


def _pod_args(config_yaml, run_dir, run_id, parameters: dict) -> list:
    """The pod entry's options; the values are KFP placeholders, filled in when the task runs."""
    args = ["--config-yaml", config_yaml, "--run-dir", run_dir, "--run-id", run_id]
    for parameter in RUN_PARAMETERS:
        args += [f"--{parameter.name.replace('_', '-')}", parameters[parameter.name]]
    return args


def _container_step(step: str, image: str):
    def component(config_yaml: str, run_dir: str, run_id: str, learning_rate: float, epochs: int, batch_size: int,
                  seed: int):
        parameters = dict(learning_rate=learning_rate, epochs=epochs, batch_size=batch_size, seed=seed)
        return dsl.ContainerSpec(image=image, command=[*POD_COMMAND, step],
                                 args=_pod_args(config_yaml, run_dir, run_id, parameters))

    component.__name__ = PYTHON_FUNCTIONS[step].__name__
    component.__doc__ = PYTHON_FUNCTIONS[step].__doc__
    return dsl.container_component(component)


def _container_train(image: str):
    def train(config_yaml: str, run_dir: str, run_id: str, learning_rate: float, epochs: int, batch_size: int,
              seed: int, claim_name: str = ""):
        """Train the model; checkpoints and logs go to <run_dir>/work_dir."""
        parameters = dict(learning_rate=learning_rate, epochs=epochs, batch_size=batch_size, seed=seed)
        return dsl.ContainerSpec(image=image, command=[*POD_COMMAND, "train"], args=[
            *_pod_args(config_yaml, run_dir, run_id, parameters), "--claim-name", claim_name])

    return dsl.container_component(train)


def _container_export(image: str):
    def export(config_yaml: str, run_dir: str, run_id: str, learning_rate: float, epochs: int, batch_size: int,
               seed: int, model: dsl.Output[dsl.Model]):
        """Export the model to ONNX; the final checkpoint, its mmcls config and the ONNX model to the model."""
        parameters = dict(learning_rate=learning_rate, epochs=epochs, batch_size=batch_size, seed=seed)
        return dsl.ContainerSpec(image=image, command=[*POD_COMMAND, "export"], args=[
            *_pod_args(config_yaml, run_dir, run_id, parameters), "--model", model.path])

    return dsl.container_component(export)


def _container_metrics(image: str):
    # Without KFP's Python executor nothing sets artifact metadata, so this style ships metrics.json
    # as a plain artifact file beside the HTML report, which the UI renders from the file itself.
    def produce_metrics(config_yaml: str, run_dir: str, run_id: str, learning_rate: float, epochs: int,
                        batch_size: int, seed: int, metrics_json: dsl.Output[dsl.Artifact], report: dsl.Output[HTML]):
        """Write metrics.json, plots and report.md; export metrics.json and the HTML report."""
        parameters = dict(learning_rate=learning_rate, epochs=epochs, batch_size=batch_size, seed=seed)
        return dsl.ContainerSpec(image=image, command=[*POD_COMMAND, "metrics"], args=[
            *_pod_args(config_yaml, run_dir, run_id, parameters),
            "--export", RunDir.METRICS, metrics_json.path, "--html-report", report.path])

    return dsl.container_component(produce_metrics)


def make_components(style: str, image: str) -> dict:
    """Step name -> KFP component of ``style`` (python | container), in the order of the step table."""
    if style == "python":
        return {name: dsl.component(func, base_image=image, install_kfp_package=False)
                for name, func in PYTHON_FUNCTIONS.items()}
    special = {"train": _container_train, "export": _container_export, "metrics": _container_metrics}
    return {name: special[name](image) if name in special else _container_step(name, image) for name in STEP_NAMES}


def serve(config_yaml: str, run_dir: str, run_id: str, claim_name: str):
    """Deploy the run's ONNX model as a KServe InferenceService when its optimized_metric reaches
    backend.serve.min_metric; otherwise say why, and succeed."""
    from backends.kfp.serving.serve_task import serve_in_pod

    serve_in_pod(config_yaml, run_dir, run_id, claim_name)


def serve_component(style: str, image: str):
    """The serve task's component (serve_task.py), in the pipeline's component style."""
    if style == "python":
        return dsl.component(serve, base_image=image, install_kfp_package=False)

    def serve_container(config_yaml: str, run_dir: str, run_id: str, claim_name: str):
        return dsl.ContainerSpec(image=image, command=["python", "-m", "backends.kfp.serving.serve_task"], args=[
            "--config-yaml", config_yaml, "--run-dir", run_dir, "--run-id", run_id, "--claim-name", claim_name])

    serve_container.__name__, serve_container.__doc__ = serve.__name__, serve.__doc__
    return dsl.container_component(serve_container)


def clean_up(config_yaml: str, run_id: str):
    """The run's exit handler: delete its TrainJob however the run ended, unless backend.keep_trainjob."""
    from backends.kfp.trainjob.cleanup_task import clean_up_in_pod

    clean_up_in_pod(config_yaml, run_id)


def clean_up_component(style: str, image: str):
    """The exit handler's task (cleanup_task.py), in the pipeline's component style."""
    if style == "python":
        return dsl.component(clean_up, base_image=image, install_kfp_package=False)

    def clean_up_container(config_yaml: str, run_id: str):
        return dsl.ContainerSpec(image=image, command=["python", "-m", "backends.kfp.trainjob.cleanup_task"],
                                 args=["--config-yaml", config_yaml, "--run-id", run_id])

    clean_up_container.__name__, clean_up_container.__doc__ = clean_up.__name__, clean_up.__doc__
    return dsl.container_component(clean_up_container)


def volume_permissions_component(image: str):
    """A task running ``python -m backends.kfp.volume.permissions`` (volume/permissions.py) on the project image."""

    def volume_permissions(mount_path: str, uid: int, gid: int):
        """Make the shared volume's root writable for the step pods' uid and gid."""
        return dsl.ContainerSpec(image=image, command=["python", "-m", "backends.kfp.volume.permissions"],
                                 args=[mount_path, uid, gid])

    return dsl.container_component(volume_permissions)

"""The step components, in both styles: Python-function (default) and custom container.

Either style only forwards to :mod:`backends.kfp.pod`, so a pod runs exactly the step function that
``backend=local`` runs. Component names give the task names of the seed's pipeline:
prepare-data, train, test, produce-metrics.
"""
from kfp import dsl
from kfp.dsl import ClassificationMetrics, Markdown, Metrics, Output

from mmclf.rundir import RunDir
from mmclf.steps import STEP_NAMES

# Python-function components: KFP embeds each function's source in pipeline.yaml and runs it in
# the project image (which has kfp installed, hence install_kfp_package=False), so each body
# imports what it uses. KFP names a component (and its task) after the function, so each step
# has its own small function rather than one generated from the step table.


def prepare_data(config_yaml: str, run_dir: str):
    """Prepare the dataset under data.root and record the run's config.yaml."""
    from backends.kfp.pod import run_from_yaml

    run_from_yaml("prepare_data", config_yaml, run_dir)


def train(config_yaml: str, run_dir: str):
    """Train the model; checkpoints and logs go to <run_dir>/work_dir."""
    from backends.kfp.pod import run_from_yaml

    run_from_yaml("train", config_yaml, run_dir)


def test(config_yaml: str, run_dir: str):
    """Evaluate the final checkpoint: eval_result.json and predictions.json."""
    from backends.kfp.pod import run_from_yaml

    run_from_yaml("test", config_yaml, run_dir)


def produce_metrics(config_yaml: str, run_dir: str, metrics: Output[Metrics],
                    classification: Output[ClassificationMetrics], report: Output[Markdown]):
    """Write metrics.json, plots and report.md; show them in the KFP UI."""
    from backends.kfp.pod import log_kfp_metrics, run_from_yaml

    run_from_yaml("metrics", config_yaml, run_dir)
    log_kfp_metrics(run_dir, metrics, classification, report)


PYTHON_FUNCTIONS = {"prepare_data": prepare_data, "train": train, "test": test, "metrics": produce_metrics}
POD_COMMAND = ["python", "-m", "backends.kfp.pod"]


def _container_step(step: str, image: str):
    def component(config_yaml: str, run_dir: str):
        return dsl.ContainerSpec(image=image, command=[*POD_COMMAND, step],
                                 args=["--config-yaml", config_yaml, "--run-dir", run_dir])

    component.__name__ = PYTHON_FUNCTIONS[step].__name__
    component.__doc__ = PYTHON_FUNCTIONS[step].__doc__
    return dsl.container_component(component)


def _container_metrics(image: str):
    # Without KFP's Python executor nothing sets artifact metadata, so this style ships metrics.json
    # as a plain artifact file; the report is Markdown, which the UI renders from the file itself.
    def produce_metrics(config_yaml: str, run_dir: str, metrics_json: dsl.Output[dsl.Artifact],
                        report: dsl.Output[dsl.Markdown]):
        """Write metrics.json, plots and report.md; export metrics.json and the report."""
        return dsl.ContainerSpec(image=image, command=[*POD_COMMAND, "metrics"], args=[
            "--config-yaml", config_yaml, "--run-dir", run_dir,
            "--export", RunDir.METRICS, metrics_json.path, "--export", RunDir.REPORT, report.path])

    return dsl.container_component(produce_metrics)


def make_components(style: str, image: str) -> dict:
    """Step name -> KFP component of ``style`` (python | container), in the order of the step table."""
    if style == "python":
        return {name: dsl.component(func, base_image=image, install_kfp_package=False)
                for name, func in PYTHON_FUNCTIONS.items()}
    return {name: _container_metrics(image) if name == "metrics" else _container_step(name, image)
            for name in STEP_NAMES}

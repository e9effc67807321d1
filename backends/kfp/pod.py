"""One step in a fresh process: what every Kubeflow pod runs.

Python-function components call :func:`run_from_yaml` from their body; custom container components run
``python -m backends.kfp.pod NAME --config-yaml YAML --run-dir DIR``. Either way the pod rebuilds the
config from its YAML parameter and calls the same step function as ``backend=local``.
"""
import argparse
import logging
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from mmclf.errors import one_line_errors
from mmclf.io import read_json
from mmclf.rundir import RunDir
from mmclf.steps import STEP_NAMES, run_step


def run_from_yaml(name: str, config_yaml: str, run_dir: str) -> None:
    """Rebuild the resolved config from ``config_yaml`` and run step ``name`` in ``run_dir``.

    Through ``mmclf.steps.run_step``, as backend=local does, so a retried pod skips finished steps.
    """
    # A pod's Python starts with no logging config; without one, the steps' progress is silent.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    run_step(name, OmegaConf.create(config_yaml), RunDir(run_dir))


def log_kfp_metrics(run_dir: str, metrics, classification, report) -> None:
    """Fill the KFP ``Metrics``, ``ClassificationMetrics`` and ``Markdown`` outputs from the run dir.

    The v2 UI renders these three artifact types; it shows nothing for a plain metrics JSON file.
    """
    run_dir = RunDir(run_dir)
    result = read_json(run_dir.metrics)
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(key, float(value))
    confusion = result["confusion_matrix"]
    classification.log_confusion_matrix(confusion["classes"], confusion["matrix"])
    Path(report.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir.report, report.path)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m backends.kfp.pod", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=STEP_NAMES, help="the step to run")
    parser.add_argument("--config-yaml", required=True, help="the resolved config as YAML text")
    parser.add_argument("--run-dir", required=True, help="the run directory (on the shared volume in a pod)")
    parser.add_argument("--export", nargs=2, action="append", default=[], metavar=("FILE", "PATH"),
                        help="after the step, copy run-dir FILE to PATH (an output artifact's path)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    """Entry point of custom container components; a user error ends in one line and exit status 2."""
    args = parse_args(argv)
    with one_line_errors():
        run_from_yaml(args.name, args.config_yaml, args.run_dir)
    for name, path in args.export:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(RunDir(args.run_dir) / name, path)


if __name__ == "__main__":
    main()

"""One step in a fresh process: what every Kubeflow pod runs.

Python-function components call :func:`run_in_pod` from their body; custom container components run
``python -m backends.kfp.pod NAME --config-yaml YAML --run-dir DIR [--run-id ID] [parameters]``. Either
way the pod rebuilds the config from its YAML parameter, applies the typed pipeline parameters
(parameters.py) and calls the same step function as ``backend=local``, in the run's own folder
(``<run dir>-<KFP run id>``, volume/layout.py: run_folder). A user error ends in one line and exit status 2.
"""
import argparse
import contextlib
import logging
import os
import shutil
from pathlib import Path, PurePosixPath

from omegaconf import DictConfig, OmegaConf

from backends.kfp.compiling.outputs import export_model, write_html_report
from backends.kfp.compiling.parameters import RUN_PARAMETERS, apply_parameters
from backends.kfp.volume.layout import VolumeLayout, run_folder
from backends.kfp.volume.permissions import VolumeNotWritable
from mmclf.errors import one_line_errors
from mmclf.run.rundir import RunDir
from mmclf.steps import STEP_NAMES, run_step


@contextlib.contextmanager
def volume_permission_errors(cfg: DictConfig):
    """A PermissionError on the shared volume, as one line naming the path and the fix."""
    try:
        yield
    except PermissionError as err:
        root = VolumeLayout.of(cfg.backend.volume).root
        if not err.filename or not PurePosixPath(err.filename).is_relative_to(root):
            raise
        raise VolumeNotWritable(
            f"{err.filename}: permission denied to this pod's user (uid {os.getuid()}, gid {os.getgid()}) on the "
            f"shared volume at {root}. Make the volume's root writable for it: keep backend.volume.make_writable="
            "true (the volume-permissions task, which runs first, fixes a root-owned volume; see its log), or "
            "chown the claim's root to that uid once, or use an NFS export writable by it") from None


def run_in_pod(name: str, config_yaml: str, run_dir: str, run_id: str = "", claim_name: str = "",
               **parameters) -> tuple[DictConfig, RunDir]:
    """Run step ``name`` in the run's folder with ``parameters`` (RUN_PARAMETERS) applied to the config.

    Through ``mmclf.steps.run_step``, as backend=local does, so a retried pod skips finished steps.
    With ``backend.distributed=trainjob`` the train step runs on the nodes of a TrainJob on the claim
    ``claim_name`` (launcher.py), each running the step entry point, node 0 recording it.
    Returns the config and folder the step ran with, for the task's output artifacts."""
    # A pod's Python starts with no logging config; without one, the steps' progress is silent.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    folder = RunDir(run_folder(run_dir, run_id))
    with one_line_errors():
        cfg = apply_parameters(OmegaConf.create(config_yaml), parameters)
        with volume_permission_errors(cfg):
            if name == "train" and cfg.backend.get("distributed") == "trainjob":
                from backends.kfp.trainjob.launcher import train_on_trainjob

                train_on_trainjob(cfg, run_dir, run_id, claim_name)
            else:
                run_step(name, cfg, folder)
    return cfg, folder


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m backends.kfp.pod", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=STEP_NAMES, help="the step to run")
    parser.add_argument("--config-yaml", required=True, help="the resolved config as YAML text")
    parser.add_argument("--run-dir", required=True, help="the run directory (on the shared volume in a pod)")
    parser.add_argument("--run-id", default="", help="the KFP run's id: the step runs in <run dir>-<run id>")
    for parameter in RUN_PARAMETERS:
        parser.add_argument(f"--{parameter.name.replace('_', '-')}", type=parameter.type, help=parameter.description)
    parser.add_argument("--export", nargs=2, action="append", default=[], metavar=("FILE", "PATH"),
                        help="after the step, copy run-dir FILE to PATH (an output artifact's path)")
    parser.add_argument("--model", metavar="PATH",
                        help="after export: the final checkpoint, its config and the ONNX model, to PATH")
    parser.add_argument("--claim-name", default="", help="train with backend.distributed=trainjob: the run's claim")
    parser.add_argument("--html-report", metavar="PATH", help="after metrics: the HTML report, to PATH")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    """Entry point of custom container components."""
    args = parse_args(argv)
    parameters = {parameter.name: getattr(args, parameter.name) for parameter in RUN_PARAMETERS}
    cfg, folder = run_in_pod(args.name, args.config_yaml, args.run_dir, args.run_id, args.claim_name, **parameters)
    for name, path in args.export:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / name, path)
    if args.model:
        export_model(cfg, folder, args.model)
    if args.html_report:
        write_html_report(folder, args.html_report)


if __name__ == "__main__":
    main()

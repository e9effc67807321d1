"""The ``logger`` group: TensorBoard and MLflow beside mmcv's text log.

TensorBoard is mmcv's own TensorboardLoggerHook, writing into the run dir. MLflow is a hook of
mmclf's own, ``mmclf.training.hooks.MlflowRunHook``, on mmcv's LoggerHook (the same tags: ``train/loss``,
``learning_rate``, ``val/accuracy_top-1``), because mmcv's MlflowLoggerHook falls short here: it never
names or ends its MLflow run, so the jobs of an in-process sweep would all log into one run and
a resumed run would start a second one. Here each run dir reports to one MLflow run, recorded in
``mlflow_run.json``: the train step opens it (or reopens it after a kill), and the metrics step,
maybe in another pod, adds the final metrics.json scalars and the plots and report as artifacts.
"""
import logging
import os
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from mmclf.errors import ConfigError, MMClfError
from mmclf.reports.jobs import scalars
from mmclf.run.io import read_record, write_json_atomic
from mmclf.run.rundir import RunDir

log = logging.getLogger(__name__)
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # no server: a SQLite file where the command runs
ARTIFACTS_BESIDE_DB = "mlflow-artifacts"  # a SQLite store's artifact folder, next to the file
SQLITE_WAIT_S = 120  # how long a job waits for another's write to a SQLite store
_SQLITE_WAIT = f"?timeout={SQLITE_WAIT_S}"  # SQLAlchemy hands it to sqlite3.connect
_PARAMS_PER_CALL = 100  # MLflow's limit on params per log_params batch
_MAX_PARAM_CHARS = 6000  # MLflow 3's limit on a param value


def logger_hooks(cfg: DictConfig, run_dir: RunDir, interval: int) -> list[dict]:
    """mmcv log hook dicts for ``cfg.logger``, to add beside the text logger."""
    hooks = []
    if cfg.logger.tensorboard is not None:
        hooks.append(dict(type="TensorboardLoggerHook", log_dir=str(run_dir / cfg.logger.tensorboard.log_dir),
                          interval=interval, ignore_last=False))
    if cfg.logger.mlflow is not None:
        hooks.append(dict(type="MlflowRunHook", run_dir=str(run_dir), interval=interval, ignore_last=False,
                          config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)))
    return hooks


def tracking_uri(mlflow_cfg) -> str:
    """The store the user chose. MLflow exports the URI it opens (``store_uri``) to MLFLOW_TRACKING_URI."""
    uri = mlflow_cfg["tracking_uri"] or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    return uri.removesuffix(_SQLITE_WAIT)


def store_uri(uri: str) -> str:
    """The URI MLflow opens: a SQLite store's writers wait up to SQLITE_WAIT_S for one another (the
    parallel jobs of a sweep) instead of failing after SQLite's default 5 s."""
    if uri.startswith("sqlite:///") and "?" not in uri:
        return uri + _SQLITE_WAIT
    return uri


def store_failed(uri: str, err: Exception) -> MMClfError:
    """One line for a tracking store that cannot be written, naming the key and the fix."""
    return MMClfError(f"logger.mlflow.tracking_uri={uri}: the tracking store failed ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''}); fix the store or choose another (or set "
                      "logger=text) and run the same command again: the run dir keeps what finished")


def create_store(mlflow_cfg) -> None:
    """Create a SQLite store, or bring its schema up to date, once before a sweep's jobs start: jobs
    that each found a new file would all run MLflow's schema migration on it at once."""
    uri = tracking_uri(mlflow_cfg)
    if not uri.startswith("sqlite:///"):
        return
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(store_uri(uri)).search_experiments(max_results=1)
    except Exception as err:
        raise store_failed(uri, err) from None


def _local_store(uri: str) -> Optional[Path]:
    """The file or folder on this machine a tracking URI writes to (a SQLite file, a file store);
    None for a server (http, databricks...), which only a request could check."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("file:"):
        return Path(uri.removeprefix("file:").removeprefix("//"))
    return Path(uri) if "://" not in uri else None


def check_store(mlflow_cfg) -> None:
    """A tracking store on this machine must be writable before training starts: MLflow finds out
    only when it first writes, after minutes of retries (SQLite) or with a long traceback."""
    uri = tracking_uri(mlflow_cfg)
    store = _local_store(uri)
    if store is None:
        return
    existing = store.absolute()
    while not existing.exists() and existing != existing.parent:  # created on first use
        existing = existing.parent
    # A SQLite file is written with a journal beside it: its folder must be writable too.
    for path in [existing, existing.parent] if existing.is_file() else [existing]:
        if not os.access(path, os.W_OK):
            raise ConfigError(f"logger.mlflow.tracking_uri={uri}: cannot write {path} (read-only or no permission); "
                              "choose a writable store, e.g. logger.mlflow.tracking_uri=sqlite:///mlflow.db, or "
                              "logger=text")


def _experiment_id(mlflow, name: str, uri: str) -> str:
    """The experiment's id, created on first use; with a SQLite store, its artifacts go beside the
    database file rather than into the working directory."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = None
    if uri.startswith("sqlite:///"):
        artifacts = (Path(uri.removeprefix("sqlite:///")).absolute().parent / ARTIFACTS_BESIDE_DB).as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=artifacts)
    except mlflow.exceptions.MlflowException:  # a parallel job of the sweep created it first
        return mlflow.get_experiment_by_name(name).experiment_id


def _flat(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)[:_MAX_PARAM_CHARS]
    return flat


def open_run(run_dir: RunDir, config: dict):
    """Start (or resume) this run dir's MLflow run and return the ``mlflow`` module; a new run
    gets the resolved config as params and is recorded in ``mlflow_run.json``."""
    import mlflow

    mlflow_cfg = config["logger"]["mlflow"]
    uri = tracking_uri(mlflow_cfg)
    mlflow.set_tracking_uri(store_uri(uri))
    if mlflow.active_run() is not None:  # left open by a job of this process that failed
        mlflow.end_run("FAILED")
    record = read_record(run_dir.mlflow_run)
    if record.get("tracking_uri") == uri:
        mlflow.start_run(run_id=record["run_id"])
        return mlflow
    run = mlflow.start_run(experiment_id=_experiment_id(mlflow, mlflow_cfg["experiment"], uri),
                           run_name=run_dir.path.name)
    params = _flat({key: value for key, value in config.items() if key != "hydra"})
    items = list(params.items())
    for start in range(0, len(items), _PARAMS_PER_CALL):
        mlflow.log_params(dict(items[start:start + _PARAMS_PER_CALL]))
    write_json_atomic(run_dir.mlflow_run, {"tracking_uri": uri, "experiment": mlflow_cfg["experiment"],
                                           "run_id": run.info.run_id})
    return mlflow


def end_failed_run() -> None:
    """Mark the MLflow run this process has open, if any, as FAILED (training raised)."""
    import sys

    mlflow = sys.modules.get("mlflow")  # only if a hook of this run imported it
    if mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run("FAILED")


def end_recorded_run(cfg: DictConfig, run_dir: RunDir, status: str) -> None:
    """End the run dir's MLflow run (``mlflow_run.json``) with ``status`` from outside the process that
    opened it: a rank that torchrun ended because another failed never ends its own, which would
    stay RUNNING. A store that cannot be reached costs a warning, not the error being reported."""
    record = read_record(run_dir.mlflow_run)
    if cfg.logger.get("mlflow") is None or not record:
        return
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(store_uri(record["tracking_uri"])).set_terminated(record["run_id"], status)
    except Exception as err:
        log.warning("could not mark MLflow run %s %s (%s)", record["run_id"], status, err)


def report_results(cfg: DictConfig, run_dir: RunDir, result: dict) -> Optional[str]:
    """Add the final metrics and the human-readable outputs to the run dir's MLflow run (when
    logger.mlflow is on) and end it; the run's id. Called before metrics.json is written, whose
    presence says the run is complete: ``result`` goes up as that file's content."""
    if cfg.logger.mlflow is None:
        return None
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    try:
        mlflow = open_run(run_dir, config)
        mlflow.log_metrics(scalars(result))
        mlflow.log_dict(result, RunDir.METRICS)
        for path in (run_dir.confusion_matrix, run_dir.training_curve, run_dir.report):
            if path.is_file():
                mlflow.log_artifact(str(path))
        run_id = mlflow.active_run().info.run_id
        mlflow.end_run()
        return run_id
    except Exception as err:
        end_failed_run()
        raise MMClfError(f"logger.mlflow.tracking_uri={tracking_uri(config['logger']['mlflow'])}: reporting failed "
                         f"({type(err).__name__}: {err}); fix the tracking store (or set logger=text) and run the "
                         "same command again: only this last step runs again") from None

"""The run's exported model where MLflow users look for it (``logger=mlflow``).

The export step logs ``model.onnx`` to the run dir's MLflow run as an MLflow model of the ONNX flavour: its
signature (uint8 ``[-1, S, S, 3]`` RGB ``images`` in, float32 ``[-1, classes]`` ``scores`` out), a few test
images as its input example and ``labels.txt`` beside it (``extra_files/labels.txt``); the logged model's id
goes into ``mlflow_run.json``. The metrics step, which knows the final figures, registers it as a new version
of ``logger.mlflow.registered_model`` when ``optimized_metric`` reaches the release gate ``min_metric``,
tagged with the run dir, the recorded config's hash and the validation and test accuracy. A version of that
name from the same run dir and config is not registered twice. Then, with any MLflow client::

    model = mlflow.pyfunc.load_model("models:/<name>/<version>")
    scores = model.predict({"images": uint8_rgb_images})["scores"]
"""
import hashlib
import logging

from omegaconf import DictConfig, OmegaConf

from mmclf.errors import ConfigError, MMClfError
from mmclf.reports import tracking
from mmclf.run.io import read_record, write_json_atomic
from mmclf.run.rundir import RunDir

log = logging.getLogger(__name__)
ARTIFACT = "model"  # the logged model's name in its run
EXAMPLE_IMAGES = 4  # test images kept as the model's input example
KEY = "logger.mlflow.registered_model"


def registered_name(cfg: DictConfig):
    mlflow_cfg = cfg.logger.get("mlflow")
    return None if mlflow_cfg is None else mlflow_cfg.get("registered_model")


def check_registration(cfg: DictConfig) -> None:
    """Before any work: a name MLflow's registry takes, a model to register, a gate that is a percentage."""
    gate = cfg.get("min_metric")
    if gate is not None and not 0 <= gate <= 100:
        raise ConfigError(f"min_metric={gate}: {cfg.optimized_metric} is a percentage; give one from 0 to 100 "
                          "(e.g. 90.0), or null for no gate")
    name = registered_name(cfg)
    if name is None:
        return
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name  # the registry's own rule

    try:
        _validate_model_name(name)
    except MlflowException as err:
        raise ConfigError(f"{KEY}={name!r}: MLflow's registry refuses it ({err.message}); give a name such as "
                          f"{KEY}=digits-resnet18") from None
    if "'" in name:  # found again by a search filter that quotes it
        raise ConfigError(f"{KEY}={name!r}: a name without quotes, e.g. {KEY}=digits-resnet18")
    if not OmegaConf.select(cfg, "runtime.export.onnx", default=False):
        raise ConfigError(f"{KEY}={name} with runtime.export.onnx=false: the registry gets the exported ONNX model; "
                          "set runtime.export.onnx=true, or logger.mlflow.registered_model=null")


def signature(model):
    """The graph's one input and one output, batch dimension free: uint8 [-1, S, S, 3], float32 [-1, classes]."""
    import numpy as np  # here, not at the top: validation, on the compile path, imports this module
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def spec(value_info, dtype):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]
        return Schema([TensorSpec(np.dtype(dtype), (-1, *dims[1:]), value_info.name)])

    (images,), (scores,) = model.graph.input, model.graph.output
    return ModelSignature(inputs=spec(images, np.uint8), outputs=spec(scores, np.float32))


def log_model(cfg: DictConfig, run_dir: RunDir, test_images: list) -> None:
    """Log the run's model.onnx with its signature, a few ``test_images`` and labels.txt (export step)."""
    if cfg.logger.get("mlflow") is None:
        return
    import mlflow.onnx
    import numpy as np
    import onnx

    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    model = onnx.load(str(run_dir.onnx_model))
    example = {model.graph.input[0].name: np.stack(test_images[:EXAMPLE_IMAGES])}
    try:
        tracking.open_run(run_dir, config)
        # The flavour's own requirements (onnx, onnxruntime at the installed versions): MLflow would infer
        # them by importing the model in a subprocess, 4 s on every run.
        info = mlflow.onnx.log_model(model, name=ARTIFACT, signature=signature(model), input_example=example,
                                     extra_files=[str(run_dir.labels)],
                                     pip_requirements=mlflow.onnx.get_default_pip_requirements())
        mlflow.end_run()
    except Exception as err:
        tracking.end_failed_run()
        raise tracking.store_failed(tracking.tracking_uri(config["logger"]["mlflow"]), err) from None
    write_json_atomic(run_dir.mlflow_run, {**read_record(run_dir.mlflow_run), "model_id": info.model_id})
    log.info("export: MLflow model %s logged (models:/%s)", ARTIFACT, info.model_id)


def config_hash(run_dir: RunDir) -> str:
    return hashlib.sha256(run_dir.config.read_bytes()).hexdigest()[:16]


def register_on_gate(cfg: DictConfig, run_dir: RunDir, result: dict) -> None:
    """Register the logged model under ``logger.mlflow.registered_model`` when ``optimized_metric`` reaches
    ``min_metric`` (metrics step, ``result`` being metrics.json's content), once per run dir and config."""
    record = read_record(run_dir.mlflow_run)
    name, model_id = registered_name(cfg), record.get("model_id")
    if name is None or model_id is None:
        return
    import mlflow

    mlflow.set_tracking_uri(tracking.store_uri(record["tracking_uri"]))
    key, gate, value = cfg.optimized_metric, cfg.get("min_metric"), result[cfg.optimized_metric]
    if gate is not None and value < gate:
        log.info("MLflow: %s=%.2f is below min_metric=%s: not registered as %s", key, value, gate, name)
        return
    tags = {"mmclf.run_dir": str(run_dir.path.resolve()), "mmclf.config_sha256": config_hash(run_dir),
            **{metric: f"{result[metric]:.2f}" for metric in (key, "val_accuracy_top-1", "test_accuracy_top-1")
               if metric in result}}
    try:
        earlier = [version for version in mlflow.search_model_versions(filter_string=f"name='{name}'")
                   if all(version.tags.get(tag) == tags[tag] for tag in ("mmclf.run_dir", "mmclf.config_sha256"))]
        if earlier:
            log.info("MLflow: this run is %s version %s already: not registered again", name, earlier[0].version)
            return
        version = mlflow.register_model(f"models:/{model_id}", name, tags=tags)
    except Exception as err:
        raise MMClfError(f"{KEY}={name}: registering failed ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}); fix the registry (or set {KEY}=null) and "
                         "run the same command again: only the last step runs again") from None
    log.info("MLflow: registered %s version %s (%s=%.2f): models:/%s/%s", name, version.version, key, value,
             name, version.version)

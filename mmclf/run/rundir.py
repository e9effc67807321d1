"""The run directory: every file and folder name of the run-dir contract, defined once.

A step reads what the previous step left in its run dir and writes its own files there; that is
the whole contract between steps, on every backend. Every module asks a ``RunDir`` for a path
instead of spelling a file name.
"""
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, init=False)
class RunDir:
    """A run directory at ``path``; accepts a path, a string or a RunDir."""

    path: Path

    # prepare-data
    CONFIG = "config.yaml"  # the resolved config this run used
    DATA_MANIFEST = "data.json"  # data=folder: the classes and each split's decoded cache
    # train: mmcls's work dir
    WORK_DIR = "work_dir"
    MMCLS_CONFIG = "mmcls_config.py"  # the mmcv config, for mmcls's own tools
    LATEST = "latest.pth"
    CHECKPOINT_HASH = ".sha256"  # epoch_N.pth.sha256 beside each checkpoint: its sha256 as it was written
    # test
    EVAL_RESULT = "eval_result.json"  # the test split (reported, never used to choose)
    VAL_RESULT = "val_result.json"  # the validation split (what sweeps optimise)
    PREDICTIONS = "predictions.json"
    MISCLASSIFIED = "misclassified.png"  # a gallery of misclassified test images
    # export (runtime.export.onnx; EXPORT_RESULT last: its presence means the export passed its parity check)
    ONNX_MODEL = "model.onnx"  # uint8 RGB images (N, S, S, 3) in, softmax scores out, the test pipeline inside
    LABELS = "labels.txt"  # the class names, one per line, in index order
    SMOKE_TEST = "smoke_test.npz"  # the first test images and model.onnx's scores of them (backend.serve's check)
    EXPORT_RESULT = "export.json"  # the parity of model.onnx with PyTorch, measured on the test split
    # metrics (METRICS last: its presence means the run is complete)
    METRICS = "metrics.json"
    REPORT = "report.md"
    CONFUSION_MATRIX = "confusion_matrix.png"
    TRAINING_CURVE = "training_curve.png"
    # records
    STEPS = "steps.json"  # which steps finished, for which config
    JOB = "job.json"  # the job's status, for sweeps and re-runs
    LOCK = ".lock"  # held by the one process running a job here (mmclf/run/lock.py)
    # logger=tensorboard / mlflow
    TENSORBOARD = "tensorboard"  # event files (the default logger.tensorboard.log_dir)
    MLFLOW_RUN = "mlflow_run.json"  # which MLflow run this run dir reports to
    # backend=kfp
    PIPELINE = "pipeline.yaml"
    TRAINJOB = "trainjob.yaml"  # backend.distributed=trainjob: the TrainJob the train task creates, for review
    INFERENCE_SERVICE = "inferenceservice.yaml"  # backend.serve: the KServe InferenceService, for review
    SERVING = "serving"  # backend.serve: the Triton model repository the InferenceService reads
    PIPELINE_GRAPH = "pipeline_graph.md"
    KFP_RUN = "kfp_run.json"
    KFP_LOCAL = ".kfp_local"  # kfp.local's pipeline root (hidden, like .hydra)

    def __init__(self, path) -> None:
        object.__setattr__(self, "path", Path(path.path if isinstance(path, RunDir) else path))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def data_manifest(self) -> Path:
        return self.path / self.DATA_MANIFEST

    @property
    def work_dir(self) -> Path:
        return self.path / self.WORK_DIR

    @property
    def mmcls_config(self) -> Path:
        return self.work_dir / self.MMCLS_CONFIG

    @property
    def latest_checkpoint(self) -> Path:
        return self.work_dir / self.LATEST

    def checkpoint(self, epoch: int) -> Path:
        """``work_dir/epoch_<epoch>.pth``: mmcv's name for the checkpoint after ``epoch`` epochs."""
        return self.work_dir / f"epoch_{epoch}.pth"

    @staticmethod
    def checkpoint_hash(checkpoint: Path) -> Path:
        """``<checkpoint>.sha256``, in ``sha256sum``'s format: ``sha256sum -c`` checks it in the work dir."""
        return checkpoint.with_name(checkpoint.name + RunDir.CHECKPOINT_HASH)

    @property
    def eval_result(self) -> Path:
        return self.path / self.EVAL_RESULT

    @property
    def val_result(self) -> Path:
        return self.path / self.VAL_RESULT

    @property
    def misclassified(self) -> Path:
        return self.path / self.MISCLASSIFIED

    @property
    def predictions(self) -> Path:
        return self.path / self.PREDICTIONS

    @property
    def onnx_model(self) -> Path:
        return self.path / self.ONNX_MODEL

    @property
    def labels(self) -> Path:
        return self.path / self.LABELS

    @property
    def smoke_test(self) -> Path:
        return self.path / self.SMOKE_TEST

    @property
    def export_result(self) -> Path:
        return self.path / self.EXPORT_RESULT

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def confusion_matrix(self) -> Path:
        return self.path / self.CONFUSION_MATRIX

    @property
    def training_curve(self) -> Path:
        return self.path / self.TRAINING_CURVE

    @property
    def steps_record(self) -> Path:
        return self.path / self.STEPS

    @property
    def job_record(self) -> Path:
        return self.path / self.JOB

    @property
    def mlflow_run(self) -> Path:
        return self.path / self.MLFLOW_RUN

    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    @property
    def pipeline(self) -> Path:
        return self.path / self.PIPELINE

    @property
    def trainjob(self) -> Path:
        return self.path / self.TRAINJOB

    @property
    def inference_service(self) -> Path:
        return self.path / self.INFERENCE_SERVICE

    @property
    def serving(self) -> Path:
        return self.path / self.SERVING

    @property
    def pipeline_graph(self) -> Path:
        return self.path / self.PIPELINE_GRAPH

    @property
    def kfp_run(self) -> Path:
        return self.path / self.KFP_RUN

    @property
    def kfp_local(self) -> Path:
        return self.path / self.KFP_LOCAL

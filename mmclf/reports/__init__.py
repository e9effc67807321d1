"""What a run tells: its record (jobs: job.json, the job's context in a sweep), its report (report:
metrics.json's figures, report.md, the plots), MLflow (tracking: the store, the run, its metrics) and the
model in MLflow (mlflow_model: logged as an ONNX MLflow model, registered on the release gate).
Imports mmclf.models, mmclf.data, mmclf.run and mmclf.errors only."""

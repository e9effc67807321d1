"""What a run tells: its record (jobs: job.json, the job's context in a sweep), its report (report:
metrics.json's figures, report.md, the plots) and MLflow (tracking: the store, the run, its metrics).
Imports mmclf.models, mmclf.data, mmclf.run and mmclf.errors only."""

"""backend.serve: the run's ONNX model as a KServe InferenceService, deployed by a serve task after
produce-metrics. Imports backends.kfp.trainjob (the pods' shared settings), backends.kfp.cluster,
backends.kfp.submitting, backends.kfp.volume, backends.kfp.checks and the core only.

manifest    the InferenceService manifest and the Triton model repository it reads (and inferenceservice.yaml)
serve_task  what the serve task's pod runs: the gate on optimized_metric, then create or replace the service
readiness   after creating it: wait for Ready (or say why not, from its status and pods), then a smoke inference
checks      backend.serve's value checks, before compiling
preflight   backend.mode=check with backend.serve: is KServe there, may the task create InferenceServices
"""

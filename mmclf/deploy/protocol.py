"""The served model's Open Inference Protocol (v2) names, shared by ``python -m mmclf.serve`` and the
Triton model that backend.serve deploys, so that one client works against both. No numpy, no onnxruntime:
the pipeline's compile path reads them."""

INPUT, OUTPUT = "images", "scores"  # UINT8 [N, H, W, 3] RGB in, FP32 [N, classes] softmax scores out
# The model's name in /v2/models/<name>/: here by default, and on Kubeflow always (backend.serve names
# the Triton model folder so).
MODEL_NAME = "mmclf"

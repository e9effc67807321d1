"""Using a finished run's model: the ONNX graph with the test pipeline inside (onnx_graph), predicting
on images (predict), the local Open Inference Protocol v2 server (serve) and the names it shares with
the cluster's Triton model (protocol). Never imports training code (mmclf.training, mmclf.steps): a
model is used where nothing trains. Imports mmclf.models, mmclf.data, mmclf.run and mmclf.errors."""

"""What compiling a pipeline needs beneath the DAG (pipeline.py) and its components: no kfp client, no
cluster, no torch. Imports backends.kfp.volume and the core (mmclf) only.

compile     the pods' config parameter, pipeline.yaml and its task graph
parameters  the typed pipeline parameters (learning rate, epochs, batch size, seed) and how pods apply them
outputs     the KFP UI's artifacts: Model, Metrics, ClassificationMetrics, HTML report
naming      run names and display names, the model's name, which claim holds a run
paths       config paths the pods cannot see (outside the volume), refused before compiling
"""

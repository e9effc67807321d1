"""mmclf: train OpenMMLab mmcls classifiers as train -> test -> export -> metrics, locally or on Kubeflow."""

__version__ = "0.1.0"

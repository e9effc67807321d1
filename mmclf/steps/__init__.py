"""The steps, in order. Each is a plain function ``step(cfg, run_dir)``: it reads what the
previous step left in ``run_dir`` and writes its own files there; no Hydra, no backend."""
from mmclf.steps.metrics import metrics
from mmclf.steps.prepare_data import prepare_data
from mmclf.steps.test import test
from mmclf.steps.train import train

STEPS = {"prepare_data": prepare_data, "train": train, "test": test, "metrics": metrics}

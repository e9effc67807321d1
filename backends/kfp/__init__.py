"""backend=kfp: the steps as a Kubeflow pipeline, one pod per step on a shared volume.

schema     the typed ``backend.*`` options (registered in Hydra's ConfigStore on import)
checks     value checks, before anything is compiled
backend    KfpBackend: the contract the core calls (check, run, returns_objective, remote_run)
naming     run names and the sweep's experiment name, from the job's Hydra context
compile    the pods' config parameter, pipeline.yaml and its task graph
pipeline   the DAG: volume tasks, step tasks, Kubernetes settings
components the step components (Python-function and custom container)
pod        what every pod runs: one step, rebuilt from its config parameter
local_run  the pipeline on this machine through kfp.local
target     which KFP server, how to authenticate, KfpError
client     submit, experiments, waiting for a run (REST)
mlmd       a finished run's metric values from ML Metadata (gRPC-web)
record     kfp_run.json: the KFP run a run dir belongs to
"""

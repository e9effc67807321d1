"""backend=kfp: the steps as a Kubeflow pipeline, one pod per step on a shared volume.

schema     the typed ``backend.*`` options (registered in Hydra's ConfigStore on import)
checks     value checks, before anything is compiled
backend    KfpBackend: the contract the core calls (check, run, returns_objective, remote_run)
compiling/ beneath the DAG: the config parameter and pipeline.yaml (compile), the typed parameters,
           the KFP UI's outputs, run names, the pods' paths
trainjob/  backend.distributed=trainjob: the TrainJob, its API, its nodes' start and logs, the train
           task's launcher, the exit handler's cleanup, its preflight
cluster/   the Kubernetes API: access without the client, the client, the preflight's findings
submitting/  a KFP API server: the endpoint, submitting and following a run, its metrics from MLMD,
           kfp_run.json
volume/    the shared volume: its folders (layout), its root made writable for the steps (permissions)
pipeline   the DAG: volume tasks, step tasks, Kubernetes settings
components the step components (Python-function and custom container) and volume-permissions
pod        what every step pod runs: one step, rebuilt from its config parameter
kfp_local  the pipeline on this machine through kfp.local
preflight  backend.mode=check: what would make a run stall, one line each
clean      backend.mode=clean: the claims and TrainJobs earlier runs left, old ones deleted when asked
kfp_mode   standalone or multi-user KFP (healthz): the runs' namespace and service accounts that follow
serving/   backend.serve: the InferenceService and its Triton model repository, the serve task, its
           checks and preflight
"""

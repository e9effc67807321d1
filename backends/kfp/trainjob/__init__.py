"""backend.distributed=trainjob: the train step on several nodes as a Kubeflow Trainer TrainJob, which
the train task's pod creates, follows and deletes. Imports backends.kfp.cluster, backends.kfp.submitting,
backends.kfp.compiling, backends.kfp.volume and the core only.

manifest      the TrainJob the train task creates, as a manifest (and trainjob.yaml, for review)
api           the TrainJob API of one namespace, a TrainJob's conditions and state in one line
start         why a TrainJob's nodes have not started, from the cluster's events
node_logs     node 0's log followed into the train task's own, while the TrainJob runs
launcher      what the train task's pod runs with a TrainJob: create it, wait for it, clean up
cleanup_task  the exit handler's task with a TrainJob: delete it however the run ended
preflight     backend.mode=check with a TrainJob: is Kubeflow Trainer there, may the train task create TrainJobs
"""

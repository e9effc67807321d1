"""Talking to a KFP API server: submitting a compiled pipeline and following its run. Imports
backends.kfp.compiling, backends.kfp.volume and the core only.

endpoint    which KFP server, how to authenticate, the calls' timeouts, KfpError
client      submit, experiments, waiting for a run (REST)
mlmd        a finished run's metric values from ML Metadata (gRPC-web)
run_record  kfp_run.json: the KFP run a run dir belongs to
"""

"""Asking the Kubernetes cluster, before a run and from its pods. Imports backends.kfp.submitting (the
calls' timeouts and errors) and the core only.

access    whether this process can reach a cluster (a kubeconfig, a pod's account), without the client
kube      the Kubernetes API through the kubernetes client: connecting, the default StorageClass
findings  the preflight's answers: a Finding and its verdict, an unanswered question, a service account's rights
"""

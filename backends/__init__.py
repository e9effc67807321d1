"""How mmclf's steps are run: in this process (local) or as a Kubeflow pipeline (kubeflow)."""

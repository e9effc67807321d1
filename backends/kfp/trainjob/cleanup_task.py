"""The exit handler's task with backend.distributed=trainjob: delete the run's TrainJob however the run ended.

    python -m backends.kfp.trainjob.cleanup_task --config-yaml YAML --run-id ID   (custom container components)

KFP runs an exit handler's task after the rest of the run whether it succeeded, failed or was
terminated, so a TrainJob left behind by a failed or stopped train task (kept for its pods' logs, or
never reached by a SIGTERM) goes when the run ends; ``backend.keep_trainjob`` keeps it. Its pods'
logs outlive it in the train task's own log, which carried node 0's (node_logs.py).
"""
import argparse
import logging

from omegaconf import OmegaConf

from backends.kfp.cluster.kube import connect
from backends.kfp.trainjob.api import TrainJobs, pod_namespace
from backends.kfp.trainjob.launcher import delete_trainjob
from backends.kfp.trainjob.manifest import trainjob_name
from mmclf.errors import one_line_errors

log = logging.getLogger(__name__)


def clean_up_in_pod(config_yaml: str, run_id: str) -> None:
    """Delete the TrainJob of KFP run ``run_id`` unless backend.keep_trainjob; one already gone is fine."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    with one_line_errors():
        backend = OmegaConf.create(config_yaml).backend
        name = trainjob_name(run_id)
        if backend.keep_trainjob:
            log.info("trainjob %s: kept (backend.keep_trainjob=true)", name)
            return
        delete_trainjob(TrainJobs(connect(backend).api, pod_namespace(backend)), name, "the run ended")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m backends.kfp.trainjob.cleanup_task",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--config-yaml", required=True, help="the resolved config as YAML text")
    parser.add_argument("--run-id", required=True, help="the KFP run's id")
    args = parser.parse_args(argv)
    clean_up_in_pod(args.config_yaml, args.run_id)


if __name__ == "__main__":
    main()

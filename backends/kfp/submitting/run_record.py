"""``kfp_run.json``: the KFP run a run dir belongs to (id, UI link, experiment, name, final state)."""
from mmclf.run.io import read_record, write_json_atomic
from mmclf.run.rundir import RunDir


def write_run_record(run_dir: RunDir, record: dict) -> None:
    write_json_atomic(run_dir.kfp_run, record)


def read_run_record(run_dir: RunDir) -> dict:
    return read_record(run_dir.kfp_run)


def remote_run(run_dir: RunDir) -> dict:
    """The job record's ``remote`` entry: which KFP run, its link and its last known state."""
    record = read_run_record(run_dir)
    if not record:
        return {}
    where = {"run_dir": record["run_dir"]} if "run_dir" in record else {}  # the run's folder on the volume
    return {"kind": "kfp", "state": record.get("state", "submitted"), "run_id": record["run_id"], "url": record["url"],
            **where}

"""Sweep summaries: ``summary.csv``, ``summary.md`` and ``summary.png`` in a Hydra sweep dir.

Written when a multirun ends (a Hydra callback) and on demand for an existing sweep dir:

    python -m mmclf.summary multirun/2026-11-29/10-00-00
"""
import csv
import io
import math
import sys
import time
from pathlib import Path
from typing import Optional

import yaml
from hydra.experimental.callback import Callback

from mmclf.errors import ConfigError, StepFailed, exit_with
from mmclf.reports.jobs import sweep_job_record
from mmclf.run.io import remove_stale_temps, write_figure_atomic, write_text_atomic
from mmclf.run.rundir import RunDir

OPTUNA_RESULT = "optimization_results.yaml"  # written by Hydra's Optuna sweeper


def _job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = [d for d in sweep_dir.iterdir() if (d / ".hydra/overrides.yaml").is_file()]
    return sorted(jobs, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))


def _overrides(job_dir: Path) -> dict:
    items = yaml.safe_load((job_dir / ".hydra/overrides.yaml").read_text()) or []
    return dict(item.lstrip("+~").split("=", 1) for item in items if "=" in item)


def _remote_columns(remote: dict) -> dict:
    """Where a job runs elsewhere, as columns named after the backend: ``kfp_run_id``, ``kfp_url``."""
    kind = remote.get("kind", "remote")
    return {f"{kind}_{key}": value for key, value in remote.items() if key not in ("kind", "state")}


def job_rows(sweep_dir: Path) -> list[dict]:
    """One dict per job: its overrides, status, objective, scalar metrics and where its results are."""
    rows = []
    for job_dir in _job_dirs(sweep_dir):
        record = sweep_job_record(job_dir)
        remote = record.get("remote", {})
        status = record.get("status", "incomplete")
        if status == "pending" and remote:
            status = f"{remote.get('kind', 'remote')} {remote.get('state', 'submitted').lower()}"
        rows.append({"job": job_dir.name, "status": status, "overrides": _overrides(job_dir),
                     "objective": record.get("objective"), "metrics": record.get("metrics", {}),
                     "run_dir": str(job_dir), "remote": _remote_columns(remote), "error": record.get("error", "")})
    return rows


def swept_keys(rows: list[dict]) -> list[str]:
    """Override keys whose value differs between jobs."""
    keys = sorted({key for row in rows for key in row["overrides"]})
    return [k for k in keys if len({row["overrides"].get(k) for row in rows}) > 1]


def _table(rows: list[dict], swept: list[str]) -> tuple[list[str], list[list]]:
    metric_names = sorted({name for row in rows for name in row["metrics"]})
    # Remote-run and error columns only where some job has them: a local sweep's table stays narrow.
    remote = list(dict.fromkeys(key for row in rows for key in row["remote"]))
    error = ["error"] if any(row["error"] for row in rows) else []
    header = ["job", "status", *swept, "objective", *metric_names, "run_dir", *remote, *error]
    body = [[row["job"], row["status"], *(row["overrides"].get(k, "") for k in swept),
             "" if row["objective"] is None else row["objective"],
             *(row["metrics"].get(name, "") for name in metric_names),
             row["run_dir"], *(row["remote"].get(key, "") for key in remote),
             *(row[key] for key in error)] for row in rows]
    return header, body


def _as_number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def plot(rows: list[dict], swept: list[str], path: Path) -> bool:
    """The objective against each swept parameter (numeric axes where the values are numbers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "succeeded" and not math.isnan(r["objective"])]
    if not done or not swept:
        return False
    fig, axes = plt.subplots(1, len(swept), figsize=(4 * len(swept), 3.5), squeeze=False)
    for ax, key in zip(axes[0], swept, strict=True):
        values = [r["overrides"].get(key) for r in done]
        numeric = [_as_number(v) for v in values]
        if all(n is not None for n in numeric):
            ax.scatter(numeric, [r["objective"] for r in done])
        else:
            labels = sorted(set(map(str, values)))
            ax.scatter([labels.index(str(v)) for v in values], [r["objective"] for r in done])
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set(xlabel=key, ylabel="objective")
    fig.tight_layout()
    write_figure_atomic(fig, path, dpi=100)
    plt.close(fig)
    return True


def _markdown(header, body, best: dict, has_plot: bool) -> str:
    lines = ["# Sweep summary", ""]
    if best:
        lines += [f"Best trial (Optuna): objective {best.get('best_value')}, "
                  f"parameters `{best.get('best_params')}`", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |" for row in body]
    if has_plot:
        lines += ["", "![objective per swept parameter](summary.png)"]
    return "\n".join(lines) + "\n"


def write_summary(sweep_dir) -> list[dict]:
    """Write the summary files of ``sweep_dir``; return its rows."""
    sweep_dir = Path(sweep_dir)
    remove_stale_temps(sweep_dir, min_age_s=600)  # of a summary write killed long ago; no lock guards a sweep dir
    rows = job_rows(sweep_dir)
    swept = swept_keys(rows)
    header, body = _table(rows, swept)
    out = io.StringIO()
    csv.writer(out).writerows([header, *body])
    write_text_atomic(sweep_dir / "summary.csv", out.getvalue())
    optuna_path = sweep_dir / OPTUNA_RESULT
    best = yaml.safe_load(optuna_path.read_text()) if optuna_path.is_file() else {}
    has_plot = plot(rows, swept, sweep_dir / "summary.png")
    write_text_atomic(sweep_dir / "summary.md", _markdown(header, body, best, has_plot))
    return rows


def planned_jobs(config) -> Optional[int]:
    """How many jobs the sweep will run: the grid's size for Hydra's basic sweeper, ``n_trials``
    for a searching one (Optuna); None when the sweeper does not say."""
    if "n_trials" in config.hydra.sweeper:
        return int(config.hydra.sweeper.n_trials)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    try:
        return math.prod(len(list(o.sweep_iterator())) if o.is_sweep_override() else 1 for o in overrides)
    except Exception:  # sweeps over intervals have no size
        return None


class SummarizeSweep(Callback):
    """Hydra callback: a line per finished job while a multirun goes (job k/N, status, objective,
    best so far, elapsed), the summary files when it ends, and a non-zero exit when every job failed."""

    def on_multirun_start(self, config, **kwargs) -> None:
        self.started, self.planned = time.time(), planned_jobs(config)
        # Resolved here, once: a parallel launcher's job gets a copy of its hydra node that resolves
        # ${now:...} again, into another sweep dir.
        self.sweep_dir = Path(config.hydra.sweep.dir).absolute()

    def on_job_end(self, config, job_return, **kwargs) -> None:
        """Counted from the sweep dir, not kept here: a parallel launcher runs jobs (and this
        callback) in other processes, each with its own copy of this object."""
        if not hasattr(self, "started"):  # a single run
            return
        hydra = job_return.hydra_cfg.hydra
        done = [row for row in job_rows(self.sweep_dir) if self._ended_in_this_sweep(row)]
        scored = [(row["objective"], row["job"]) for row in done
                  if isinstance(row["objective"], (int, float)) and not math.isnan(row["objective"])]
        record = sweep_job_record(hydra.runtime.output_dir)
        objective = record.get("objective")
        shown = "-" if objective is None else f"{objective:.2f}"
        best = f"{max(scored)[0]:.2f} (job {max(scored)[1]})" if scored else "-"
        print(f"sweep: job {len(done)}/{self.planned or '?'} (#{hydra.job.num}) "
              f"{record.get('status', 'incomplete')}, objective {shown}, best {best}, "
              f"{time.time() - self.started:.0f} s elapsed", flush=True)

    def _ended_in_this_sweep(self, row: dict) -> bool:
        """A job whose record was written since this sweep started (a re-run sweep dir holds older ones)."""
        record = Path(row["run_dir"]) / RunDir.JOB
        return record.is_file() and record.stat().st_mtime >= self.started

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_summary(sweep_dir)
        failed = sum(row["status"] in ("failed", "refused") for row in rows)
        print(f"sweep summary: {sweep_dir / 'summary.md'} ({len(rows)} jobs, {failed} failed or refused)")
        if rows and failed == len(rows):
            exit_with(StepFailed(f"every job of the sweep failed; see the error column of {sweep_dir / 'summary.md'}"))


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        exit_with(ConfigError(f"{' '.join(args) or 'no folder'}: not a sweep folder; usage: python -m mmclf.summary "
                              "SWEEP_DIR"))
    rows = write_summary(Path(args[0]))
    print(f"{Path(args[0]) / 'summary.md'}: {len(rows)} jobs")


if __name__ == "__main__":
    main()

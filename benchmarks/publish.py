"""What every benchmark does with its result: print its table and write its JSON report."""
import json
from pathlib import Path


def publish(report: dict, table: str, out: Path) -> dict:
    """Print ``table``, write ``report`` to ``out`` as JSON (its folder made), and return the report."""
    print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report

"""Metrics as one JSON line per log step in ``WORKDIR/metrics.jsonl`` (process 0 only)."""

import json
import math
import os


class MetricsLog:
    def __init__(self, workdir: str, enabled: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the restored checkpoint: they are recomputed; and
        a line that a kill cut short."""
        if not (self.enabled and os.path.exists(self.path)):
            return
        with open(self.path) as f:
            kept = [line for line in f if (s := _step_of(line)) is not None and s <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, self.path)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step)}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]


def _step_of(line: str) -> int | None:
    """The step of a complete metrics line; None for a blank or torn one."""
    try:
        return json.loads(line)["step"] if line.endswith("\n") else None
    except (ValueError, KeyError, TypeError):
        return None


def _jsonable(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None

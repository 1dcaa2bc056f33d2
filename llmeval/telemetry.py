"""Heartbeat / metrics files for eval-monitor (fields: docs/monitor.md).

A :class:`Heartbeat` rewrites one small JSON file atomically (temp + rename)
at most every ``interval`` seconds (default ``$LLMEVAL_HEARTBEAT_S``, else 5),
and always on :meth:`finish`. It keeps a
short history of (time, done, output tokens) so a monitor can show recent
rates and a run that slowed down. A run whose record lists GPUs also writes, at
each heartbeat, what NVML says of them (``gpus``: utilisation and memory), so
eval-monitor on a login node shows the GPUs of a run on a compute node.
"""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson

HISTORY = 120  # points kept; at the default interval that is the last ~10 minutes
# What a heartbeat says of each GPU of its run (llmeval.gpus readings, docs/monitor.md).
GPU_FIELDS = (
    "index",
    "cuda_index",
    "mig_parent",
    "name",
    "util_percent",
    "memory_used_mb",
    "memory_total_mb",
)
DEFAULT_INTERVAL = 5.0


def heartbeat_interval() -> float:
    """Seconds between heartbeat writes: ``$LLMEVAL_HEARTBEAT_S`` (> 0), else 5."""
    try:
        value = float(os.environ.get("LLMEVAL_HEARTBEAT_S", ""))
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value > 0 else DEFAULT_INTERVAL


class Heartbeat:
    def __init__(
        self,
        path: Path,
        *,
        run: dict[str, Any],
        info: dict[str, Any],
        interval: float | None = None,
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.run = run
        self.interval = heartbeat_interval() if interval is None else interval
        self.started = time.time()
        self.state: dict[str, Any] = {
            "type": "metrics",
            "run_id": run["run_id"],
            "stage": run["stage"],
            "pid": os.getpid(),
            "host": run.get("host"),
            "slurm": run.get("slurm"),
            "started_at": self.started,
            "state": "running",
            "total": None,
            "done": 0,
            "generated": 0,
            "cached": 0,
            "skipped": 0,
            "errors": 0,
            "output_tokens": 0,
            "prompt_tokens": 0,
            **info,
        }
        self.history: deque[list[float]] = deque(maxlen=HISTORY)
        self._last = 0.0
        self._nvml: Any = None
        if run.get("gpus"):  # the run record found GPUs visible to this process
            from llmeval.gpus import NVML

            self._nvml = NVML().open()
        self.write(force=True)

    def update(self, **counts: Any) -> None:
        """Set counters (absolute values) and write if the interval has passed."""
        self.state.update(counts)
        self.write()

    def write(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        s = self.state
        self.history.append([round(now, 3), s["done"], s["output_tokens"]])
        elapsed = max(now - self.started, 1e-9)
        s["updated_at"] = now
        s["elapsed_s"] = round(elapsed, 3)
        # Rates count the work this run did, not what it found in the cache or in OUT.
        s["samples_per_s"] = round(s["generated"] / elapsed, 4)
        s["tokens_per_s"] = round(s["output_tokens"] / elapsed, 3)
        recent = [h for h in self.history if now - h[0] <= 60] or list(self.history)
        # Over less than a second a "recent" rate is noise (two writes a moment apart).
        if len(recent) >= 2 and recent[-1][0] - recent[0][0] >= 1.0:
            span = recent[-1][0] - recent[0][0]
            s["recent_samples_per_s"] = round((recent[-1][1] - recent[0][1]) / span, 4)
            s["recent_tokens_per_s"] = round((recent[-1][2] - recent[0][2]) / span, 3)
        else:
            s["recent_samples_per_s"] = s["samples_per_s"]
            s["recent_tokens_per_s"] = s["tokens_per_s"]
        remaining = (s["total"] - s["done"]) if s["total"] is not None else None
        rate = s["recent_samples_per_s"] or s["samples_per_s"]
        s["eta_s"] = round(remaining / rate, 1) if remaining is not None and rate > 0 else None
        s["history"] = list(self.history)
        if self._nvml is not None:
            s["gpus"] = [{k: g.get(k) for k in GPU_FIELDS} for g in self._nvml.read()]
        s["run"] = self.run
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(s))
        os.replace(tmp, self.path)

    def finish(self, state: str = "finished") -> None:
        self.state["state"] = state
        self.state["finished_at"] = time.time()
        self.write(force=True)
        if self._nvml is not None:
            self._nvml.close()
            self._nvml = None


def run_paths(output: str | None, run_dir: str | None, run_id: str) -> tuple[Path, Path]:
    """Where a run's metrics file and run record go (docs/records.md, "Run records").

    Beside ``-o OUT`` when it is a regular file (or will be); in ``--run-dir``;
    else in ``$LLMEVAL_HOME/runs/<run_id>/`` (``-o /dev/null`` included).
    """
    from llmeval import paths

    if run_dir:
        d = Path(run_dir)
        return d / "metrics.json", d / "runs.jsonl"
    if output and output != "-" and (not os.path.exists(output) or os.path.isfile(output)):
        return Path(output + ".metrics.json"), Path(output + ".runs.jsonl")
    d = paths.runs_dir() / run_id
    return d / "metrics.json", d / "runs.jsonl"


def start_run(
    run: dict[str, Any], output: str | None, run_dir: str | None, info: dict[str, Any]
) -> Heartbeat:
    """Append ``run`` to the run's ``runs.jsonl`` and start its heartbeat (docs/records.md)."""
    from llmeval.records import AppendWriter

    metrics_path, runs_path = run_paths(output, run_dir, run["run_id"])
    with AppendWriter(runs_path) as w:
        w.write(run)
    return Heartbeat(metrics_path, run=run, info=info)

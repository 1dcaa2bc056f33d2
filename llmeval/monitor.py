"""eval-monitor: a live view of runs (heartbeat files), GPUs (NVML) and SLURM array tasks.

    eval-monitor results/my-campaign            # live, redrawn in place; Ctrl-C quits
    eval-monitor results/my-campaign --once     # one snapshot
    eval-monitor results/my-campaign --json     # JSONL snapshots (docs/monitor.md)

Runs are found by their heartbeat files (``*.metrics.json`` beside outputs,
``metrics.json`` in run directories) under the given directories (default:
``$LLMEVAL_HOME/runs``). A running run whose heartbeat is older than
``--stall`` seconds, or whose process is gone on this host, is *stalled*.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from llmeval import cli, paths
from llmeval.errors import DataError
from llmeval.slurm import FAILED_STATES, squeue_tasks

PROG = "eval-monitor"
WIDTH = 80
SPARK = "▁▂▃▄▅▆▇█"
EPILOG = """\
examples:
  eval-monitor results/my-campaign                 # live view; Ctrl-C quits
  eval-monitor results/my-campaign --once          # one plain snapshot
  eval-monitor --json --interval 10 | jq -c '.runs[] | select(.state == "stalled")'
"""


# ---------------------------------------------------------------------------- runs


def find_heartbeats(dirs: list[str]) -> list[Path]:
    found: set[Path] = set()
    for d in dirs:
        if os.path.isfile(d):
            found.add(Path(d))
            continue
        for pattern in ("**/*.metrics.json", "**/metrics.json"):
            found.update(Path(p) for p in glob.glob(os.path.join(d, pattern), recursive=True))
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited: it is not running any more.
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().split(b")")[-1].split()[0] != b"Z"
    except OSError:
        return True


def count_lines(path: str | None, limit_bytes: int = 256 << 20) -> int | None:
    """Complete lines in an output file (None when absent or too big to count each refresh)."""
    if not path or path == "-" or not os.path.exists(path) or os.path.getsize(path) > limit_bytes:
        return None
    with open(path, "rb") as fh:
        return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))


def rate_history(history: list[list[float]], column: int) -> list[float]:
    """Rates between consecutive heartbeat points (column 1 = samples, 2 = tokens)."""
    out = []
    for a, b in zip(history, history[1:]):
        dt = b[0] - a[0]
        if dt > 0:
            out.append(max(0.0, (b[column] - a[column]) / dt))
    return out


def sparkline(values: list[float], width: int = 16) -> str:
    values = values[-width:]
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(
        SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))] for v in values
    )


def read_run(path: Path, now: float, stall_s: float) -> dict[str, Any] | None:
    try:
        m = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None  # being replaced right now, or not ours
    if m.get("type") != "metrics":
        return None
    state = m.get("state", "running")
    reason = None
    age = now - float(m.get("updated_at", now))
    if state == "running":
        if (
            m.get("host") == socket.gethostname()
            and isinstance(m.get("pid"), int)
            and not _alive(m["pid"])
        ):
            state, reason = "stalled", "process gone"
        elif age > stall_s:
            state, reason = "stalled", f"no heartbeat for {age:.0f} s"
    history = m.get("history") or []
    return {
        "file": str(path),
        "run_id": m.get("run_id"),
        "stage": m.get("stage"),
        "model": m.get("model"),
        "datasets": m.get("datasets") or [],
        "state": state,
        "reason": reason,
        "host": m.get("host"),
        "pid": m.get("pid"),
        "slurm": m.get("slurm"),
        "output": m.get("output"),
        "output_lines": count_lines(m.get("output")),
        "done": m.get("done", 0),
        "total": m.get("total"),
        "generated": m.get("generated", 0),
        "cached": m.get("cached", 0),
        "skipped": m.get("skipped", 0),
        "errors": m.get("errors", 0),
        "output_tokens": m.get("output_tokens", 0),
        "statuses": m.get("statuses"),
        "samples_per_s": m.get("samples_per_s"),
        "tokens_per_s": m.get("tokens_per_s"),
        "recent_samples_per_s": m.get("recent_samples_per_s"),
        "recent_tokens_per_s": m.get("recent_tokens_per_s"),
        "eta_s": m.get("eta_s") if state == "running" else None,
        "heartbeat_age_s": round(age, 1),
        "tokens_per_s_history": [round(x, 2) for x in rate_history(history, 2)][-30:],
        "engine": m.get("engine") if isinstance(m.get("engine"), dict) else None,
        "gpus": [g for g in m.get("gpus") or [] if isinstance(g, dict)],
    }


# ---------------------------------------------------------------------------- GPUs


class GPUs:
    """NVML readings (llmeval.gpus), with a short utilisation history per GPU."""

    def __init__(self) -> None:
        from llmeval.gpus import NO_PYNVML, NVML

        self._nvml = NVML().open()
        self.note: str | None = None
        if self._nvml.nv is None:
            self.note = (
                f"no GPU view: {NO_PYNVML}"
                if self._nvml.error is None
                else f"no GPU visible: NVML unavailable ({self._nvml.error})"
            )

    def read(self) -> list[dict[str, Any]]:
        out = self._nvml.read()
        if self._nvml.nv is not None:
            self.note = None if out else self._nvml.note
        return out


# ---------------------------------------------------------------------------- SLURM


def campaign_job_ids(dirs: list[str], runs: list[dict[str, Any]]) -> set[str]:
    ids = {
        str((r.get("slurm") or {}).get("array_job_id") or (r.get("slurm") or {}).get("job_id"))
        for r in runs
        if r.get("slurm")
    }
    for d in dirs:
        for f in glob.glob(os.path.join(d, "**", "slurm_jobs.json"), recursive=True):
            try:
                ids.update(str(j) for j in orjson.loads(Path(f).read_bytes()).get("job_ids", []))
            except (OSError, orjson.JSONDecodeError, AttributeError):
                pass
    return {i for i in ids if i and i != "None"}


# ---------------------------------------------------------------------------- snapshot & views


def snapshot(dirs: list[str], gpus: GPUs, stall_s: float) -> dict[str, Any]:
    now = time.time()
    runs = [r for p in find_heartbeats(dirs) if (r := read_run(p, now, stall_s)) is not None]
    order = {"failed": 0, "stalled": 1, "running": 2, "finished": 3}
    runs.sort(key=lambda r: (order.get(r["state"], 9), r.get("run_id") or ""))
    job_ids = campaign_job_ids(dirs, runs)
    slurm = squeue_tasks(job_ids)
    if slurm["available"]:
        by_task = {
            (
                str((r.get("slurm") or {}).get("array_job_id")),
                str((r.get("slurm") or {}).get("array_task_id")),
            ): r
            for r in runs
            if r.get("slurm")
        }
        for t in slurm["tasks"]:
            run = by_task.get((t["array_job_id"], t["array_task_id"]))
            t["run_ids"] = [run["run_id"]] if run else []
    readings = gpus.read()
    return {
        "type": "snapshot",
        "time": now,
        "host": socket.gethostname(),
        "dirs": dirs,
        "runs": runs,
        "gpus": readings,
        "gpu_note": gpus.note if not readings else None,
        "slurm": slurm,
    }


def _num(v: Any, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _eta(s: Any) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _engine_line(e: dict[str, Any]) -> str:
    """The backend's own figures: phase, requests running/waiting, KV-cache use."""
    parts = [str(e.get("phase") or "?")]
    if e.get("running") is not None or e.get("waiting") is not None:
        parts.append(
            f"run {_num(e.get('running'), '{:.0f}')} wait {_num(e.get('waiting'), '{:.0f}')}"
        )
    elif e.get("in_flight") is not None:
        parts.append(f"in flight {e['in_flight']}")
    if e.get("kv_cache_usage") is not None:
        parts.append(f"KV {100 * float(e['kv_cache_usage']):.0f}%")
    if e.get("prefix_cache_hit_rate") is not None:
        parts.append(f"prefix hits {100 * float(e['prefix_cache_hit_rate']):.0f}%")
    return "engine: " + ", ".join(parts)


def _gpu_line(g: dict[str, Any]) -> str:
    """A GPU's name, utilisation and memory (a MIG slice marked ``m``)."""
    label = f"GPU{g.get('cuda_index', g.get('index'))}" + (
        "m" if g.get("mig_parent") is not None else ""
    )
    return (
        f"{label} {str(g.get('name'))[:18]:18s} {_num(g.get('util_percent'), '{:3d}%')} "
        f"{_num(g.get('memory_used_mb'), '{:d}')}/{_num(g.get('memory_total_mb'), '{:d}')} MiB"
    )


def render(snap: dict[str, Any], width: int = WIDTH) -> list[str]:
    """The snapshot as lines of at most ``width`` columns."""
    runs = snap["runs"]
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    head = time.strftime("%H:%M:%S", time.localtime(snap["time"]))
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no runs found"
    lines = [f"eval-monitor {head}  {len(runs)} runs: {summary}", ""]
    for r in runs:
        mark = "!!" if r["state"] in ("stalled", "failed") else "  "
        total = r["total"]
        pct = f" {100 * r['done'] / total:.0f}%" if total else ""
        what = f"{r['stage'] or '?'} {r['model'] or ''} {','.join(r['datasets'][:3])}".strip()
        count = f"{r['done']}/{total}" if total is not None else f"{r['done']} done"
        lines.append(f"{mark}{r['state'].upper():9s}{what[:44]:44s} {count}{pct}")
        if r["stage"] == "generate":
            detail = (
                f"    tok/s {_num(r['recent_tokens_per_s'])}/{_num(r['tokens_per_s'])} "
                f"smp/s {_num(r['recent_samples_per_s'], '{:.2f}')} cache {r['cached']} "
                f"err {r['errors']} ETA {_eta(r['eta_s'])} {sparkline(r['tokens_per_s_history'])}"
            )
        else:
            st = r.get("statuses") or {}
            detail = (
                f"    pass {st.get('pass', 0)} fail {st.get('fail', 0)} timeout {st.get('timeout', 0)} "
                f"error {st.get('error', 0)} no_answer {st.get('no_answer', 0)}"
            )
        lines.append(detail)
        engine = r.get("engine") or {}
        if engine and r["state"] == "running":
            lines.append("    " + _engine_line(engine))
        if r["state"] == "running":  # the run's own GPUs, read where it runs
            lines += ["    " + _gpu_line(g) for g in r.get("gpus") or []]
        if r["reason"]:
            lines.append(f"    {r['reason']} (last heartbeat {r['heartbeat_age_s']:.0f} s ago)")
    lines.append("")
    if snap["gpus"]:
        for g in snap["gpus"]:
            spark = sparkline(g.get("util_history", []))
            lines.append(
                f"{_gpu_line(g)} {_num(g.get('power_w'), '{:.0f}')}W "
                f"{_num(g.get('temperature_c'), '{:.0f}')}C {spark}"
            )
            for p in g["processes"][:3]:
                lines.append(
                    f"    pid {p['pid']} {p['command'] or ''} {_num(p['memory_mb'], '{:.0f}')} MiB"
                )
    else:
        lines.append(f"GPU: {snap['gpu_note']}")
    slurm = snap["slurm"]
    if slurm["available"]:
        tasks = slurm["tasks"]
        states: dict[str, int] = {}
        for t in tasks:
            states[t["state"]] = states.get(t["state"], 0) + 1
        lines.append(
            "SLURM: " + (", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no tasks")
        )
        for t in tasks:
            if t["state"] in FAILED_STATES:
                lines.append(f"!!  task {t['job_id']} {t['state']} {t['reason']}")
                for log_line in t.get("log_tail", [])[-3:]:
                    lines.append(f"      {log_line}")
    else:
        lines.append(f"SLURM: {slurm['note']}")
    return [line[:width] for line in lines]


# ---------------------------------------------------------------------------- command line


class Monitor(cli.Command):
    prog = PROG
    description = "Watch eval-generate / eval-score runs, GPUs and SLURM array tasks."
    epilog = EPILOG
    inputs = None
    output = None
    limit = None

    def add_arguments(self, p: cli.Parser) -> None:
        p.add_argument(
            "dirs",
            nargs="*",
            metavar="RUN_DIR|CAMPAIGN_DIR",
            help="where to look for heartbeat files (default: $LLMEVAL_HOME/runs)",
        )
        p.add_argument(
            "--interval",
            type=cli.positive_float,
            default=2.0,
            metavar="S",
            help="refresh every S seconds (default 2)",
        )
        p.add_argument("--once", action="store_true", help="print one snapshot and exit")
        p.add_argument(
            "--json", action="store_true", help="JSONL snapshots (fields: docs/monitor.md)"
        )
        p.add_argument(
            "--stall",
            type=cli.positive_float,
            default=30.0,
            metavar="S",
            help="a running run with no heartbeat for S seconds is stalled (default 30)",
        )

    def run(self) -> int:
        args = self.args
        for d in args.dirs:
            if not os.path.exists(d):
                raise DataError(d, "no such directory (give a run or campaign directory)")
        dirs = args.dirs or [str(paths.runs_dir())]
        gpus = GPUs()
        if args.once or args.json or not sys.stdout.isatty():
            return _stream(dirs, gpus, args)
        return _live(dirs, gpus, args)


def main(argv: list[str] | None = None) -> int:
    return Monitor().main(argv)


def _stream(dirs: list[str], gpus: GPUs, args: Any) -> int:
    for snap in _snapshots(dirs, gpus, args):
        if args.json:
            sys.stdout.buffer.write(orjson.dumps(snap) + b"\n")
        else:
            sys.stdout.write("\n".join(render(snap)) + "\n\n")
        sys.stdout.flush()
    return 0


def _snapshots(dirs: list[str], gpus: GPUs, args: Any) -> Iterator[dict[str, Any]]:
    while True:
        yield snapshot(dirs, gpus, args.stall)
        if args.once:
            return
        time.sleep(args.interval)


def _live(dirs: list[str], gpus: GPUs, args: Any) -> int:
    """Redraw in place on the alternate screen; Ctrl-C (or SIGTERM) restores the terminal."""
    out = sys.stdout

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    out.write("\x1b[?1049h\x1b[?25l")  # alternate screen, hide cursor
    try:
        for snap in _snapshots(dirs, gpus, args):
            cols, rows = shutil.get_terminal_size((WIDTH, 24))
            lines = render(snap, min(cols, 200))[: rows - 1]
            # Home, overwrite each line and clear its rest, clear below: no blank flash.
            out.write("\x1b[H" + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
            out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        out.write("\x1b[?25h\x1b[?1049l")  # show cursor, leave the alternate screen
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

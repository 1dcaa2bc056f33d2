"""SLURM, as llmeval talks to it: the job environment, sbatch, squeue, scontrol.

Shared by eval-campaign (submits arrays) and eval-monitor (shows their tasks),
and by provenance (which job a run belongs to). Every call to a SLURM command
is here, with its failure turned into one readable line: a login node whose
controller is unreachable gives ``squeue: cannot reach the SLURM controller``,
not a screenful of resolver errors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any

from llmeval.errors import StageError

# The run record's "slurm" object (docs/records.md) from the job's environment.
ENVIRONMENT = {
    "job_id": "SLURM_JOB_ID",
    "array_job_id": "SLURM_ARRAY_JOB_ID",
    "array_task_id": "SLURM_ARRAY_TASK_ID",
    "node": "SLURMD_NODENAME",
    "partition": "SLURM_JOB_PARTITION",
    "restart_count": "SLURM_RESTART_COUNT",
}
# squeue states (long form, lower-cased) of tasks that ended badly.
FAILED_STATES = (
    "failed",
    "timeout",
    "out_of_memory",
    "node_fail",
    "cancelled",
    "boot_fail",
    "deadline",
    "preempted",
)


def job_environment() -> dict[str, str] | None:
    """This process's SLURM job ids, node and partition, or None outside a job."""
    found = {k: os.environ[v] for k, v in ENVIRONMENT.items() if v in os.environ}
    return found or None


def one_line(stderr: str, limit: int = 200) -> str:
    """A SLURM command's error output as one short line a person can act on."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return "no error message"
    joined = " ".join(lines).lower()
    if "configuration source" in joined or "unable to process configuration file" in joined:
        return "no SLURM cluster configured (no slurm.conf; set SLURM_CONF)"
    if any(
        marker in joined
        for marker in (
            "unable to contact slurm controller",
            "unable to establish control machine address",
            "unable to resolve",
            "connection refused",
        )
    ):
        return "cannot reach the SLURM controller (running? SLURM_CONF right?)"
    fatal = [ln for ln in lines if "fatal:" in ln]
    return (fatal[-1] if fatal else lines[-1])[:limit]


_FAILED: dict[str, Any] = {}  # squeue's last failure: eval-monitor asks again after a while
RETRY_S = 60.0


def squeue_tasks(job_ids: set[str], timeout: float = 5.0) -> dict[str, Any]:
    """The (array) tasks of ``job_ids`` from squeue, with log tails for failed ones.

    Returns ``{"available": bool, "note": str | None, "tasks": [...]}``; never
    raises. After a failure (no cluster here, controller down) squeue is not
    asked again for :data:`RETRY_S` seconds, so a live view stays responsive.
    """
    if shutil.which("squeue") is None:
        return {"available": False, "note": "squeue not found", "tasks": []}
    if _FAILED and time.monotonic() - _FAILED["at"] < RETRY_S:
        return {"available": False, "note": _FAILED["note"], "tasks": []}
    result = _squeue(job_ids, timeout)
    if result["available"]:
        _FAILED.clear()
    else:
        _FAILED.update(at=time.monotonic(), note=result["note"])
    return result


def _squeue(job_ids: set[str], timeout: float) -> dict[str, Any]:
    cmd = ["squeue", "-h", "-t", "all", "-o", "%i|%A|%F|%K|%T|%j|%M|%N|%r"]
    if job_ids:
        cmd += ["-j", ",".join(sorted(job_ids))]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        note = f"squeue: no answer within {timeout:g} s (controller unreachable?)"
        return {"available": False, "note": note, "tasks": []}
    except OSError as exc:
        return {"available": False, "note": f"squeue failed: {exc.strerror or exc}", "tasks": []}
    if out.returncode != 0:
        return {"available": False, "note": f"squeue: {one_line(out.stderr)}", "tasks": []}
    tasks = []
    for line in out.stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 9:
            continue
        jid, _, array_job, array_task, state, name, elapsed, node, reason = parts[:9]
        state_word = state.lower()
        task: dict[str, Any] = {
            "job_id": jid,
            "array_job_id": array_job,
            "array_task_id": array_task,
            "state": state_word,
            "name": name,
            "elapsed": elapsed,
            "node": node,
            "reason": reason,
        }
        if state_word in FAILED_STATES:
            task["log_tail"] = log_tail(jid)
        tasks.append(task)
    return {"available": True, "note": None, "tasks": tasks}


def log_tail(job_id: str, lines: int = 5) -> list[str]:
    """The last ``lines`` lines of a job's stdout file (from ``scontrol show job``)."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    path = next((f.split("=", 1)[1] for f in out.stdout.split() if f.startswith("StdOut=")), None)
    if not path or not os.path.exists(path):
        return []
    with open(path, "rb") as fh:
        fh.seek(max(0, os.path.getsize(path) - 8192))
        return fh.read().decode("utf-8", "replace").splitlines()[-lines:]


def sbatch(script: str | os.PathLike[str]) -> str:
    """Submit ``script``; return the job id. A refusal is a :class:`StageError` in one line."""
    if shutil.which("sbatch") is None:
        raise StageError(
            "sbatch not found: is this a SLURM login node? (make campaign runs it locally)"
        )
    out = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if out.returncode != 0:
        raise StageError(f"sbatch {os.path.basename(str(script))}: {one_line(out.stderr, 400)}")
    return out.stdout.strip().split(";")[0]

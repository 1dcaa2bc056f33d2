"""GPUs through NVML, for the run record (provenance) and eval-monitor: one reader for both.

Every NVML field is read on its own, so a field the device does not support
(``NotSupported``: utilisation on a MIG slice, power on some boards, processes
in a container) becomes ``None`` instead of ending the reading. A GPU in MIG
mode is reported as its MIG slices (each with its own memory), because that
is what a CUDA process is given.

``CUDA_VISIBLE_DEVICES`` is honoured the way the CUDA runtime reads it: a
comma-separated list of ordinals, ``GPU-<uuid>`` or ``MIG-<uuid>`` (prefixes
allowed), in that order; the list stops at the first entry that names no
device; an empty value hides every GPU. Unset, every GPU is visible. A
device's ``cuda_index`` is its position in that list, the number a CUDA
program (and vLLM, and torch) calls it.

Importing this module imports nothing heavy; ``pynvml`` is imported when a
reading is asked for, and its absence is a note, never an error.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

NO_PYNVML = "nvidia-ml-py is not installed (pip install 'llmeval[gpu]')"


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _field(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``: one NVML reading, or None when the device does not support it (or it fails)."""
    try:
        return fn(*args)
    except Exception:  # NVMLError_NotSupported, NoPermission, GpuIsLost, ...: the field is unknown
        return None


def _mb(value: Any, attr: str) -> int | None:
    """A memory figure in MiB from an NVML memory-info struct, None when unknown."""
    return _field(lambda: int(getattr(value, attr) // 2**20))


def _number(value: Any, kind: Callable[[Any], Any]) -> Any:
    return None if value is None else _field(kind, value)


def visibility_filter(env: str | None, devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The devices ``CUDA_VISIBLE_DEVICES=env`` makes visible, in CUDA's order.

    ``devices`` are dicts with ``index`` (NVML index of the physical GPU),
    ``uuid`` and ``mig_parent`` (None for a whole GPU). A numeric entry names a
    whole GPU by NVML index; ``GPU-``/``MIG-`` entries match UUIDs by prefix.
    """
    if env is None:
        return list(devices)
    out: list[dict[str, Any]] = []
    whole = [d for d in devices if d.get("mig_parent") is None]
    every = list(devices)
    for raw in env.split(","):
        entry = raw.strip()
        match: dict[str, Any] | None = None
        if entry.lstrip("-").isdigit():
            i = int(entry)
            match = next((d for d in whole if d["index"] == i), None)
        elif entry.startswith(("GPU-", "MIG-")):
            hits = [d for d in every if isinstance(d.get("uuid"), str) and d["uuid"].startswith(entry)]
            match = hits[0] if len(hits) == 1 else None
        if match is None:
            break  # CUDA ignores this entry and every one after it
        if match not in out:
            out.append(match)
    return out


class NVML:
    """An NVML session: ``NVML().open()`` then :meth:`devices` / :meth:`read`; never raises."""

    def __init__(self) -> None:
        self.nv: Any = None
        self.note: str | None = None
        self.error: str | None = None  # why NVML could not start
        self.history: dict[str, deque[float]] = {}

    def open(self) -> NVML:
        try:
            import pynvml
        except ImportError:
            self.note = NO_PYNVML
            return self
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.error = str(exc) or type(exc).__name__
            self.note = f"no NVIDIA driver/GPU visible to NVML ({self.error})"
            return self
        self.nv = pynvml
        return self

    def close(self) -> None:
        if self.nv is not None:
            _field(self.nv.nvmlShutdown)
            self.nv = None

    def __enter__(self) -> NVML:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ enumeration

    def _handles(self) -> list[tuple[dict[str, Any], Any]]:
        """Every device CUDA could be given: whole GPUs, or the MIG slices of a GPU in MIG mode."""
        nv = self.nv
        count = _field(nv.nvmlDeviceGetCount) or 0
        out: list[tuple[dict[str, Any], Any]] = []
        for i in range(count):
            h = _field(nv.nvmlDeviceGetHandleByIndex, i)
            if h is None:
                continue
            base = {"index": i, "uuid": _text(_field(nv.nvmlDeviceGetUUID, h))}
            mig = _field(nv.nvmlDeviceGetMigMode, h)
            current = mig[0] if isinstance(mig, (tuple, list)) and mig else mig
            slices = []
            if current:  # NVML_DEVICE_MIG_ENABLE
                for j in range(_field(nv.nvmlDeviceGetMaxMigDeviceCount, h) or 0):
                    m = _field(nv.nvmlDeviceGetMigDeviceHandleByIndex, h, j)
                    if m is None:
                        continue  # an empty slot (NVMLError_NotFound)
                    info = {
                        "index": i,
                        "uuid": _text(_field(nv.nvmlDeviceGetUUID, m)),
                        "mig_parent": i,
                    }
                    slices.append((info, m))
            if slices:
                out += slices
            else:
                out.append(({**base, "mig_parent": None}, h))
        return out

    def _visible(self) -> list[tuple[dict[str, Any], Any]]:
        handles = self._handles()
        by_id = {id(info): (info, h) for info, h in handles}
        chosen = visibility_filter(os.environ.get("CUDA_VISIBLE_DEVICES"), [i for i, _ in handles])
        return [by_id[id(info)] for info in chosen]

    # ------------------------------------------------------------------ readings

    def devices(self) -> list[dict[str, Any]]:
        """Static facts of the visible devices (the run record's ``gpus``)."""
        if self.nv is None:
            return []
        nv = self.nv
        driver = _text(_field(nv.nvmlSystemGetDriverVersion))
        out = []
        for cuda_index, (info, h) in enumerate(self._visible()):
            out.append(
                {
                    **info,
                    "cuda_index": cuda_index,
                    "name": _text(_field(nv.nvmlDeviceGetName, h)) or "unknown",
                    "memory_total_mb": _mb(_field(nv.nvmlDeviceGetMemoryInfo, h), "total"),
                    "driver": driver,
                }
            )
        if not out and self.note is None:
            self.note = _none_note()
        return out

    def read(self) -> list[dict[str, Any]]:
        """Live readings of the visible devices (eval-monitor's ``gpus``)."""
        if self.nv is None:
            return []
        nv = self.nv
        out = []
        driver = _text(_field(nv.nvmlSystemGetDriverVersion))
        for cuda_index, (info, h) in enumerate(self._visible()):
            mem = _field(nv.nvmlDeviceGetMemoryInfo, h)
            util = _field(nv.nvmlDeviceGetUtilizationRates, h)
            power = _field(nv.nvmlDeviceGetPowerUsage, h)  # milliwatts
            temp = _field(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU)
            gpu: dict[str, Any] = {
                **info,
                "cuda_index": cuda_index,
                "name": _text(_field(nv.nvmlDeviceGetName, h)) or "unknown",
                "driver": driver,
                "util_percent": _number(_field(getattr, util, "gpu"), int),
                "memory_used_mb": _mb(mem, "used"),
                "memory_total_mb": _mb(mem, "total"),
                "power_w": _number(power, lambda mw: round(float(mw) / 1000, 1)),
                "temperature_c": _number(temp, int),
                "processes": self._processes(h),
            }
            hist = self.history.setdefault(str(info.get("uuid") or info["index"]), deque(maxlen=60))
            if gpu["util_percent"] is not None:
                hist.append(float(gpu["util_percent"]))
            gpu["util_history"] = list(hist)
            out.append(gpu)
        if not out and self.note is None:
            self.note = _none_note()
        return out

    def _processes(self, h: Any) -> list[dict[str, Any]]:
        procs = []
        for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            fn = getattr(self.nv, getter, None)
            for p in (_field(fn, h) if fn else None) or []:
                used = getattr(p, "usedGpuMemory", None)
                procs.append(
                    {
                        "pid": getattr(p, "pid", None),
                        "memory_mb": used // 2**20 if isinstance(used, int) and used > 0 else None,
                        "command": _command(getattr(p, "pid", None)),
                    }
                )
        return procs


def _none_note() -> str:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return f"no GPU visible (CUDA_VISIBLE_DEVICES={env!r})"
    return "NVML found no GPU"


def _command(pid: Any) -> str | None:
    try:
        return Path(f"/proc/{int(pid)}/comm").read_text().strip()
    except (OSError, TypeError, ValueError):
        return None


def gpu_info() -> tuple[list[dict[str, Any]], str | None]:
    """The visible GPUs' static facts, and a note saying why there are none (None when there are)."""
    with NVML() as nvml:
        gpus = nvml.devices()
        return gpus, (None if gpus else nvml.note or _none_note())


def visible_gpu_count() -> int:
    """How many GPUs a CUDA program started now would see (0 without NVML or a driver)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and not env.strip():
        return 0  # hidden on purpose: no need to ask NVML
    return len(gpu_info()[0])

"""llmeval.gpus against a scripted NVML: MIG slices, NotSupported fields, CUDA_VISIBLE_DEVICES."""

import sys
import types
from types import SimpleNamespace

import orjson
import pytest

from llmeval import gpus, monitor, provenance


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's own name
    pass


class NVMLError_NotFound(NVMLError):  # noqa: N801
    pass


def fake_pynvml(devices):
    """A pynvml module: ``devices`` are dicts; a callable value raises when read."""
    nv = types.ModuleType("pynvml")
    nv.NVMLError = NVMLError
    nv.NVMLError_NotSupported = NVMLError_NotSupported
    nv.NVML_TEMPERATURE_GPU = 0
    nv.calls = []

    def field(h, name):
        value = h.get(name)
        if isinstance(value, type) and issubclass(value, Exception):
            raise value()
        return value

    nv.nvmlInit = lambda: None
    nv.nvmlShutdown = lambda: None
    nv.nvmlSystemGetDriverVersion = lambda: b"550.54.15"
    nv.nvmlDeviceGetCount = lambda: len(devices)
    nv.nvmlDeviceGetHandleByIndex = lambda i: devices[i]
    nv.nvmlDeviceGetUUID = lambda h: field(h, "uuid")
    nv.nvmlDeviceGetName = lambda h: field(h, "name")

    def mig_mode(h):
        if "slices" not in h:
            raise NVMLError_NotSupported()
        return (1, 1)

    nv.nvmlDeviceGetMigMode = mig_mode
    nv.nvmlDeviceGetMaxMigDeviceCount = lambda h: 7

    def mig_handle(h, j):
        if j >= len(h["slices"]) or h["slices"][j] is None:
            raise NVMLError_NotFound()
        return h["slices"][j]

    nv.nvmlDeviceGetMigDeviceHandleByIndex = mig_handle
    nv.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(
        total=field(h, "total"), used=field(h, "used"), free=0
    )
    nv.nvmlDeviceGetUtilizationRates = lambda h: SimpleNamespace(gpu=field(h, "util"), memory=0)
    nv.nvmlDeviceGetPowerUsage = lambda h: field(h, "power")
    nv.nvmlDeviceGetTemperature = lambda h, kind: field(h, "temp")
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: field(h, "procs") or []
    nv.nvmlDeviceGetGraphicsRunningProcesses = lambda h: []
    return nv


GIB = 2**30
H100 = {"uuid": "GPU-aaaa1111", "name": b"NVIDIA H100 80GB HBM3", "total": 80 * GIB, "used": 1 * GIB,
        "util": 37, "power": NVMLError_NotSupported, "temp": 41, "procs": None}
MIG_A = {"uuid": "MIG-bbbb2222", "name": "NVIDIA H100 80GB HBM3 MIG 3g.40gb", "total": 40 * GIB,
         "used": 2 * GIB, "util": NVMLError_NotSupported, "power": NVMLError_NotSupported,
         "temp": NVMLError_NotSupported, "procs": NVMLError_NotSupported}
MIG_B = {**MIG_A, "uuid": "MIG-cccc3333", "used": 3 * GIB}
MIG_GPU = {"uuid": "GPU-dddd4444", "name": "NVIDIA H100 80GB HBM3", "total": 80 * GIB, "used": 5 * GIB,
           "util": NVMLError_NotSupported, "power": 120000, "temp": 50, "slices": [MIG_A, None, MIG_B]}


@pytest.fixture
def nvml(monkeypatch):
    nv = fake_pynvml([H100, MIG_GPU])
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return nv


def test_mig_slices_and_unsupported_fields_are_none_not_a_crash(nvml):
    with gpus.NVML() as n:
        readings = n.read()
    assert [(g["uuid"], g["index"], g["cuda_index"], g["mig_parent"]) for g in readings] == [
        ("GPU-aaaa1111", 0, 0, None),
        ("MIG-bbbb2222", 1, 1, 1),
        ("MIG-cccc3333", 1, 2, 1),
    ]
    whole, a, b = readings
    assert whole["util_percent"] == 37 and whole["power_w"] is None and whole["temperature_c"] == 41
    assert whole["name"] == "NVIDIA H100 80GB HBM3" and whole["memory_total_mb"] == 81920
    assert a["util_percent"] is None and a["processes"] == [] and a["memory_used_mb"] == 2048
    assert b["memory_used_mb"] == 3072 and b["util_history"] == []


@pytest.mark.parametrize(
    "env, uuids",
    [
        ("0", ["GPU-aaaa1111"]),
        ("MIG-cccc", ["MIG-cccc3333"]),
        ("MIG-cccc3333,GPU-aaaa", ["MIG-cccc3333", "GPU-aaaa1111"]),
        ("0,7,MIG-bbbb2222", ["GPU-aaaa1111"]),  # CUDA stops at the first entry naming no device
        ("GPU-zzzz,0", []),
        ("", []),
        ("-1", []),
    ],
)
def test_cuda_visible_devices_is_read_as_cuda_does(nvml, monkeypatch, env, uuids):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    found, note = gpus.gpu_info()
    assert [g["uuid"] for g in found] == uuids
    assert [g["cuda_index"] for g in found] == list(range(len(uuids)))
    if not uuids:
        assert note == f"no GPU visible (CUDA_VISIBLE_DEVICES={env!r})"


def test_run_record_and_backend_choice_respect_cuda_visible_devices(nvml, monkeypatch, vllm_standin):
    from llmeval import backends

    assert backends.choose("auto", None)[0] == "vllm"  # vLLM importable, GPUs visible
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert backends.choose("auto", None)[0] == "hf"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-bbbb2222")
    rec = provenance.run_record("generate")
    assert [(g["name"], g["uuid"], g["memory_total_mb"], g["driver"]) for g in rec["gpus"]] == [
        ("NVIDIA H100 80GB HBM3 MIG 3g.40gb", "MIG-bbbb2222", 40960, "550.54.15")
    ]
    assert rec["gpu_note"] is None


def test_monitor_shows_a_mig_slice_without_utilisation(nvml, tmp_path, capsys):
    snap = monitor.snapshot([str(tmp_path)], monitor.GPUs(), 30)
    assert len(snap["gpus"]) == 3 and snap["gpu_note"] is None
    lines = monitor.render(snap)
    gpu_lines = [line for line in lines if line.startswith("GPU")]
    assert gpu_lines[0].startswith("GPU0 NVIDIA H100 80GB H  37% 1024/81920 MiB -W 41C")
    assert gpu_lines[1].startswith("GPU1m NVIDIA H100 80GB H - 2048/40960 MiB -W -C")
    assert all(len(line) <= 80 for line in lines)
    orjson.dumps(snap)  # JSON-safe


def test_every_nvml_call_failing_still_reports(monkeypatch):
    broken = fake_pynvml([{k: NVMLError for k in ("uuid", "name", "total", "used", "util", "power", "temp", "procs")}])
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    found, note = gpus.gpu_info()
    assert found == [
        {"index": 0, "uuid": None, "mig_parent": None, "cuda_index": 0, "name": "unknown",
         "memory_total_mb": None, "driver": "550.54.15"}
    ]
    (reading,) = monitor.GPUs().read()
    assert reading["util_percent"] is None and reading["memory_used_mb"] is None


def test_no_driver_is_a_note(monkeypatch):
    nv = fake_pynvml([])

    def init():
        raise NVMLError("NVML Shared Library Not Found")

    nv.nvmlInit = init
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    assert gpus.gpu_info() == ([], "no NVIDIA driver/GPU visible to NVML (NVML Shared Library Not Found)")
    assert gpus.visible_gpu_count() == 0
    m = monitor.GPUs()
    assert m.read() == [] and m.note == "no GPU visible: NVML unavailable (NVML Shared Library Not Found)"


def test_a_runs_heartbeat_carries_its_gpus_and_monitor_shows_them(nvml, tmp_path, monkeypatch):
    """On a cluster eval-monitor runs on a login node: a run's GPUs come from its heartbeat,
    read by NVML where the run is (only the GPUs visible to it)."""
    from llmeval import telemetry

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-cccc")
    run = provenance.run_record("generate")
    assert [g["uuid"] for g in run["gpus"]] == ["MIG-cccc3333"]
    hb = telemetry.start_run(run, str(tmp_path / "g.jsonl"), None, {"model": "m", "datasets": ["d"]})
    beat = orjson.loads((tmp_path / "g.jsonl.metrics.json").read_bytes())
    assert beat["gpus"] == [
        {
            "index": 1,
            "cuda_index": 0,
            "mig_parent": 1,
            "name": "NVIDIA H100 80GB HBM3 MIG 3g.40gb",
            "util_percent": None,
            "memory_used_mb": 3072,
            "memory_total_mb": 40960,
        }
    ]
    snap = monitor.snapshot([str(tmp_path)], monitor.GPUs(), 60.0)
    (r,) = snap["runs"]
    assert r["gpus"] == beat["gpus"]
    lines = monitor.render(snap)
    assert "    GPU0m NVIDIA H100 80GB H - 3072/40960 MiB" in lines
    hb.finish()
    assert hb._nvml is None  # the NVML session ends with the run
    beat = orjson.loads((tmp_path / "g.jsonl.metrics.json").read_bytes())
    assert beat["state"] == "finished" and len(beat["gpus"]) == 1
    # A run without GPUs never opens NVML and writes none.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cpu = telemetry.start_run(provenance.run_record("score"), str(tmp_path / "s.jsonl"), None, {})
    assert cpu._nvml is None
    assert "gpus" not in orjson.loads((tmp_path / "s.jsonl.metrics.json").read_bytes())

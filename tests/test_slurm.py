"""llmeval/slurm.py: SLURM's commands and environment, failures as one readable line."""

import os
import shutil

import pytest
from conftest import run_cmd

from llmeval import slurm

# stderr of the real squeue (slurm-wlm 22.05) on a machine with the client and no cluster,
# and on one whose slurm.conf names a controller that does not resolve.
NO_CONFIG = """\
squeue: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host
squeue: error: fetch_config: DNS SRV lookup failed
squeue: error: _establish_config_source: failed to fetch config
squeue: fatal: Could not establish a configuration source
"""
UNRESOLVED = "".join(
    "squeue: error: get_addr_info: getaddrinfo() failed: Name or service not known: "
    f"Inappropriate ioctl for device, attempt number {i}\n"
    for i in range(-4, 6)
) + (
    'squeue: error: slurm_set_addr: Unable to resolve "nohost.invalid"\n'
    "squeue: error: Unable to establish control machine address\n"
    "slurm_load_jobs error: Inappropriate ioctl for device\n"
)


def test_one_line_turns_resolver_noise_into_advice():
    assert slurm.one_line(NO_CONFIG) == (
        "no SLURM cluster configured (no slurm.conf; set SLURM_CONF)"
    )
    assert slurm.one_line(UNRESOLVED) == (
        "cannot reach the SLURM controller (running? SLURM_CONF right?)"
    )
    assert slurm.one_line("sbatch: error: Batch job submission failed: Invalid account\n") == (
        "sbatch: error: Batch job submission failed: Invalid account"
    )
    assert "\n" not in slurm.one_line("a\nb\nc") and slurm.one_line("") == "no error message"


def test_job_environment(monkeypatch):
    for var in slurm.ENVIRONMENT.values():
        monkeypatch.delenv(var, raising=False)
    assert slurm.job_environment() is None
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm.job_environment() == {"array_job_id": "41", "array_task_id": "3"}


def test_monitor_with_a_client_and_no_cluster_says_one_line(tmp_path):
    """The real squeue, installed, with no slurm.conf: eval-monitor prints one SLURM line."""
    if shutil.which("squeue") is None:
        if os.environ.get("CI"):
            pytest.fail("squeue is not installed, and CI must run this test (make install-system)")
        pytest.skip("squeue is not installed (make install-system)")
    if os.path.exists("/etc/slurm/slurm.conf"):
        pytest.skip("this machine has a SLURM configuration")
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    import subprocess
    import sys

    from conftest import BIN

    out = subprocess.run(
        [sys.executable, str(BIN / "eval-monitor"), str(tmp_path), "--once"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode().splitlines()
    slurm_lines = [ln for ln in text if "slurm" in ln.lower() or "squeue" in ln]
    assert slurm_lines == [
        "SLURM: squeue: no SLURM cluster configured (no slurm.conf; set SLURM_CONF)"
    ]
    assert out.stderr == b""


def test_sbatch_refusal_is_one_line(tmp_path, monkeypatch):
    if shutil.which("sbatch") is None:
        pytest.skip("sbatch is not installed (make install-system)")
    monkeypatch.delenv("SLURM_CONF", raising=False)
    script = tmp_path / "job.sbatch"
    script.write_text("#!/bin/bash\ntrue\n")
    if os.path.exists("/etc/slurm/slurm.conf"):
        pytest.skip("this machine has a SLURM configuration")
    with pytest.raises(slurm.StageError) as exc:
        slurm.sbatch(script)
    assert str(exc.value).startswith("sbatch job.sbatch: ")
    assert "\n" not in str(exc.value)


def test_score_run_shows_done_of_total_in_the_monitor(tmp_path):
    prompts = tmp_path / "p.jsonl"
    run_cmd(["eval-resolve", "humaneval", "--limit", "3", "-o", str(prompts)])
    gen = tmp_path / "g.jsonl"
    run_cmd(["eval-generate", str(prompts), "--backend", "reference", "--model", "r", "-o", str(gen)])
    out = run_cmd(["eval-score", str(gen), "-o", str(tmp_path / "s.jsonl")])
    assert out.returncode == 0, out.stderr
    text = run_cmd(["eval-monitor", str(tmp_path), "--once"]).stdout.decode()
    (score_line,) = [ln for ln in text.splitlines() if "score" in ln and "FINISHED" in ln]
    assert score_line.endswith(" 3/3 100%")

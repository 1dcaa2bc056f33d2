from conftest import heavy_imports

from llmeval import provenance


def test_run_record_fields(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    rec = provenance.run_record("generate", argv=["eval-generate"], seed=5, preset={"name": "cpu"})
    assert rec["type"] == "run" and rec["stage"] == "generate"
    assert rec["run_id"].startswith("generate-")
    assert rec["slurm"] == {"job_id": "77", "array_task_id": "3"}
    assert rec["seed"] == 5 and rec["preset"] == {"name": "cpu"}
    assert rec["libraries"]["orjson"]
    assert rec["llmeval"]["version"]
    # No GPU on these machines: reported, not fatal.
    assert isinstance(rec["gpus"], list)
    if not rec["gpus"]:
        assert rec["gpu_note"]


def test_versions_read_without_importing_torch():
    assert heavy_imports("from llmeval import provenance; provenance.run_record('x')") == []


def test_git_revision_reads_checkout(tmp_path):
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text("abc123\n")
    assert provenance.git_revision(tmp_path) == "abc123"
    (git / "refs" / "heads" / "main").unlink()
    (git / "packed-refs").write_text("# pack\ndef456 refs/heads/main\n")
    assert provenance.git_revision(tmp_path) == "def456"

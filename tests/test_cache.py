"""llmeval/cache.py: the shared, content-addressed generation cache."""

import subprocess
import sys
from hashlib import sha256

from llmeval import paths
from llmeval.cache import GenerationCache


def key(i: int) -> str:
    return sha256(str(i).encode()).hexdigest()


def test_default_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMEVAL_CACHE", str(tmp_path / "c"))
    cache = GenerationCache()
    assert cache.root == tmp_path / "c" == paths.cache_dir()
    assert (tmp_path / "c" / "gen").is_dir()


def test_put_get_across_instances_and_shards(tmp_path):
    a = GenerationCache(tmp_path)
    for i in range(50):
        a.put(key(i), {"completion": f"c{i}", "finish_reason": "stop"})
    assert a.get(key(3))["completion"] == "c3"
    a.close()
    b = GenerationCache(tmp_path)
    assert [b.get(key(i))["completion"] for i in range(50)] == [f"c{i}" for i in range(50)]
    assert b.get(key(999)) is None and (b.hits, b.misses) == (50, 1)
    assert len({p.name for p in (tmp_path / "gen").iterdir()}) > 1  # sharded by key prefix


def test_a_reader_sees_entries_another_process_wrote_later(tmp_path):
    reader = GenerationCache(tmp_path)
    assert reader.get(key(7)) is None
    writer = GenerationCache(tmp_path)
    writer.put(key(7), {"completion": "late", "finish_reason": "stop"})
    writer.close()
    assert reader.get(key(7))["completion"] == "late"  # the shard grew: re-read


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    code = (
        "import sys; from hashlib import sha256; from llmeval.cache import GenerationCache\n"
        "w = int(sys.argv[1]); c = GenerationCache(sys.argv[2])\n"
        "for i in range(300):\n"
        "    c.put(sha256(f'{w}-{i}'.encode()).hexdigest(), {'completion': 'x' * 3000})\n"
        "c.close()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(w), str(tmp_path)]) for w in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    cache = GenerationCache(tmp_path)
    found = sum(
        cache.get(sha256(f"{w}-{i}".encode()).hexdigest()) is not None
        for w in range(4)
        for i in range(300)
    )
    assert found == 1200


def test_a_torn_entry_is_healed_not_fatal(tmp_path):
    c = GenerationCache(tmp_path)
    c.put(key(1), {"completion": "one"})
    c.close()
    shard = tmp_path / "gen" / f"{key(1)[:2]}.jsonl"
    shard.write_bytes(shard.read_bytes() + b'{"key": "torn')  # a killed writer's half line
    c2 = GenerationCache(tmp_path)
    assert c2.get(key(1))["completion"] == "one"
    c2.put(key(1)[:2] + "f" * 62, {"completion": "two"})  # same shard: heals, then appends
    c2.close()
    assert b"torn" not in shard.read_bytes()
    assert GenerationCache(tmp_path).get(key(1)[:2] + "f" * 62)["completion"] == "two"

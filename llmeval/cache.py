"""The generation cache: content-addressed by ``key``, shared by runs and processes.

Layout: ``<cache-dir>/gen/<first two hex digits of key>.jsonl``, 256 append-only
shards of entries ``{"key", "completion", "finish_reason", "usage", "model_id",
"created_at"}``. Writers append whole lines with :class:`AppendWriter` (shared
``flock`` per line, exclusive only to heal a torn tail), so any number of
processes (SLURM array tasks on one cluster filesystem) can write at once
without corrupting a shard or losing an entry. A reader loads a shard the first
time it needs it and re-reads it when a key is missing and the shard has grown.
Failed generations are never cached.

Cache directory: ``--cache-dir``, else ``$LLMEVAL_CACHE``, else
``$LLMEVAL_HOME/cache`` (default ``~/.cache/llmeval/cache``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from llmeval import paths
from llmeval.records import AppendWriter, Record, read_records


class GenerationCache:
    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root) if root else paths.cache_dir()
        self.dir = self.root / "gen"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, dict[str, Record]] = {}
        self._sizes: dict[str, int] = {}
        self._writers: dict[str, AppendWriter] = {}
        self.hits = 0
        self.misses = 0

    def _path(self, shard: str) -> Path:
        return self.dir / f"{shard}.jsonl"

    def _load(self, shard: str) -> dict[str, Record]:
        path = self._path(shard)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if shard not in self._shards or size != self._sizes.get(shard):
            entries: dict[str, Record] = {}
            if size:
                for rec in read_records(path, tolerate_torn_tail=True):
                    if isinstance(rec.get("key"), str):
                        entries[rec["key"]] = rec
            self._shards[shard] = entries
            self._sizes[shard] = size
        return self._shards[shard]

    def get(self, key: str) -> Record | None:
        shard = key[:2]
        entry = self._shards.get(shard, {}).get(key)
        if entry is None:
            entry = self._load(shard).get(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> None:
        shard = key[:2]
        record = {"key": key, **entry, "created_at": time.time()}
        writer = self._writers.get(shard)
        if writer is None:
            writer = self._writers[shard] = AppendWriter(self._path(shard), fsync_interval=5.0)
        writer.write(record)
        self._shards.setdefault(shard, {})[key] = record

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

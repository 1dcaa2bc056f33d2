"""vllm/v1/metrics/reader.py: the metric snapshot LLM.get_metrics() returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Metric:
    name: str
    labels: dict[str, str]


@dataclass
class Counter(Metric):
    value: int


@dataclass
class Gauge(Metric):
    value: float

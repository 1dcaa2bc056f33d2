"""llmeval: a Unix toolchain for evaluating language models.

Five commands pass JSONL records along pipes and files:
``eval-resolve`` -> ``eval-generate`` -> ``eval-score`` -> ``eval-aggregate``,
with ``eval-monitor`` watching runs. The record contract is docs/records.md.
"""

__version__ = "0.1.0"

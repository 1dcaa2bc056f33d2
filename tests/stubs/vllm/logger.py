"""vllm/logger.py: vLLM's logger writes to the stream ``VLLM_LOGGING_STREAM`` names, stdout by default.

The stream is resolved when vllm is imported (``logging.config.dictConfig``
with ``"stream": "ext://sys.stdout"``), as the real configuration does.
"""

from __future__ import annotations

import logging
import os
import sys

_stream = os.environ.get("VLLM_LOGGING_STREAM", "ext://sys.stdout")
logger = logging.getLogger("vllm")
logger.setLevel(logging.INFO)
logger.propagate = False
logger.handlers.clear()  # configured once per import of vllm, as vLLM's dictConfig does
_handler = logging.StreamHandler(sys.stderr if _stream == "ext://sys.stderr" else sys.stdout)
_handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s %(message)s"))
logger.addHandler(_handler)


def init_logger(name: str) -> logging.Logger:
    return logger

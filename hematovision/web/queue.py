"""How many requests the app's queue runs at once: a measured default, overridable per deployment.

``python -m bench.concurrency`` loads the app at queue limits 1, 2 and 4 (8 clients, distinct images) and
records requests/s and latency in ``bench/results/concurrency.md``; ``QUEUE_CONCURRENCY`` is the limit with
the most requests/s there (then the lower p95). A deployment on more cores can set
``HEMATOVISION_QUEUE_CONCURRENCY``; a value that is not a whole number >= 1 stops the start with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import HematoVisionError

#: Measured on 2 cores (bench/results/concurrency.md, 8 clients x 25 /classify, median of 3): limit 1 served
#: 14.4 requests/s (p95 668 ms), 2 14.3/s (705 ms), 4 14.0/s (724 ms) - within the VM's run-to-run spread, so
#: the smallest: one request already keeps both cores busy (the interpreter runs on every core). The limit is
#: per event (Gradio's default_concurrency_limit), so a long /batch does not hold up /classify.
QUEUE_CONCURRENCY = 1
MAX_QUEUE = 64  # requests waiting beyond this are refused at once (a "queue full" error) rather than left to time out
ENV = "HEMATOVISION_QUEUE_CONCURRENCY"


class QueueSettingError(HematoVisionError, ValueError):
    """HEMATOVISION_QUEUE_CONCURRENCY is not a whole number >= 1."""


def queue_concurrency(environ: Mapping[str, str] = os.environ) -> int:
    """The queue's concurrency limit: ``$HEMATOVISION_QUEUE_CONCURRENCY`` when set, else :data:`QUEUE_CONCURRENCY`."""
    raw = environ.get(ENV, "").strip()
    if not raw:
        return QUEUE_CONCURRENCY
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise QueueSettingError(f"{ENV}={raw!r}: expected a whole number of requests run at once (1 or more); "
                                f"unset it for the measured default {QUEUE_CONCURRENCY}.")
    return value

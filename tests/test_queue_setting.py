"""The app's queue concurrency: the measured default, an operator's override, and a clear refusal of bad values."""

import pytest

from hematovision.web.queue import ENV, QUEUE_CONCURRENCY, QueueSettingError, queue_concurrency


@pytest.mark.parametrize("environ, expected", [({}, QUEUE_CONCURRENCY), ({ENV: ""}, QUEUE_CONCURRENCY), ({ENV: " 3 "}, 3),
                                               ({ENV: "1"}, 1)])
def test_default_and_override(environ, expected):
    assert queue_concurrency(environ) == expected


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5", "1e3"])
def test_bad_values_are_refused_with_the_reason(raw):
    with pytest.raises(QueueSettingError, match=f"{ENV}=.*whole number.*unset it for the measured default") as info:
        queue_concurrency({ENV: raw})
    assert isinstance(info.value, ValueError)


def test_the_default_is_the_measured_best():
    """bench/results/concurrency.json (python -m bench.concurrency) is where the default comes from."""
    import json
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "bench" / "results" / "concurrency.json"
    if not results.exists():
        pytest.skip("bench/results/concurrency.json not written yet (python -m bench.concurrency)")
    chosen = json.loads(results.read_text())["chosen"]
    assert chosen["app_best"] == QUEUE_CONCURRENCY
    assert chosen["station_best"] == chosen["station_default"]  # the station's default threads (every core) measured best


def test_the_benchmark_picks_the_best_limit_and_thread_count():
    from bench.concurrency import best_limit, best_threads, markdown

    app = [{"limit": 1, "requests_per_s": 15.5, "ok": 200, "errors": 0, "median_ms": 480.0, "p95_ms": 620.0},
           {"limit": 2, "requests_per_s": 15.52, "ok": 200, "errors": 0, "median_ms": 500.0, "p95_ms": 700.0},
           {"limit": 4, "requests_per_s": 30.0, "ok": 150, "errors": 50, "median_ms": 300.0, "p95_ms": 400.0}]
    assert best_limit(app) == 1  # a tie at 0.1 requests/s goes to the lower p95; a run with errors never wins
    station = [{"threads": 1, "fields_per_s": 22.8, "cells_per_s": 24.4, "ok": True},
               {"threads": 2, "fields_per_s": 25.2, "cells_per_s": 27.0, "ok": True}]
    assert best_threads(station) == 2 and best_limit([]) is None and best_threads([]) is None
    text = "\n".join(markdown({"command": "python -m bench.concurrency", "app": app, "station": station,
                               "chosen": {"app_best": 1, "app_default": 1, "station_best": 2, "station_default": 2}}))
    assert "| 1 | 15.50 | 480 | 620 | 0 |" in text and "| 2 | 25.2 | 27.0 |" in text

"""Issue 16: under the z-stack bomb and 40 MP uploads the app stays under 1.5 GB and keeps answering."""

import pytest

pytest.importorskip("gradio_client", reason="the app benchmark needs gradio_client (requirements.txt)")
pytest.importorskip("psutil", reason="RSS is read with psutil (requirements-dev.txt)")

pytestmark = pytest.mark.slow


def test_hostile_uploads_keep_rss_bounded_and_normal_requests_answered():
    from bench.app_memory import TARGET_PEAK_MIB, run

    report = run()
    bomb = report["hostile_calls"][0]
    assert bomb["endpoint"] == "/zstack_mesh" and "budget" in bomb["outcome"] and bomb["seconds"] < 5
    assert report["peak_rss_mib"] < TARGET_PEAK_MIB, report
    normal = report["normal_classify_during_attack"]
    assert normal["requests"] >= 1 and normal["labels"] == ["neutrophil"]

"""Smoke test of the quality protocol on real CDNOW orders (one cutoff, a few seconds)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.evaluate import DATA_END, evaluate, format_table
from streams.io.events_file import read_events

DATA = Path(__file__).resolve().parents[3] / "shared/data/cdnow_sample_orders.jsonl.gz"


@pytest.mark.skipif(not DATA.exists(), reason="shared CDNOW sample not present")
def test_streaming_scores_beat_recency_on_active_customers() -> None:
    cutoff = datetime(1997, 10, 1, tzinfo=UTC)
    results = evaluate(read_events(DATA), cutoffs=(cutoff,))
    by_key = {(r.slice_name, r.method): r for r in results}
    core = by_key[("active90", "streaming (core)")]
    recency = by_key[("active90", "days since last order")]
    rfm = by_key[("active90", "offline RFM LR")]
    assert core.customers == 409
    assert core.auc > recency.auc + 0.04, format_table(results)
    assert core.auc > rfm.auc - 0.02, format_table(results)
    assert core.log_loss < by_key[("active90", "BG/NBD prior only")].log_loss + 0.05
    assert by_key[("all", "streaming (core)")].customers == 2357
    assert cutoff < DATA_END

"""Quality of churn scores on real CDNOW orders: the development protocol, as a table.

Usage: ``python bench/quality.py [EVENTS_FILE]``
(default: ../shared/data/cdnow_sample_orders.jsonl.gz).
Prints AUC-ROC and log-loss per cutoff and slice for the streaming core, the BG/NBD prior
alone, days since last order and an offline RFM logistic regression, then one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from streams.evaluate import DEV_CUTOFFS, evaluate, format_table
from streams.io.events_file import read_events
from streams.replay import ReplayEngine, sorted_events

DEFAULT_EVENTS = Path(__file__).resolve().parents[2] / "shared/data/cdnow_sample_orders.jsonl.gz"


def main(argv: list[str]) -> int:
    """Print the quality table and a JSON summary; return the exit code."""
    path = Path(argv[1]) if len(argv) > 1 else DEFAULT_EVENTS
    events = list(read_events(path))
    results = evaluate(events)
    print(format_table(results))
    ordered = sorted_events(events, before=DEV_CUTOFFS[-1])
    engine = ReplayEngine()
    started = time.perf_counter()
    for event in ordered:
        engine.feed(event)
    engine.final_scores(DEV_CUTOFFS[-1])
    elapsed = time.perf_counter() - started
    summary = {
        f"{r.cutoff.date()}/{r.slice_name}/{r.method}": {
            "auc": round(r.auc, 4),
            "log_loss": round(r.log_loss, 4),
        }
        for r in results
    }
    summary["replay"] = {
        "events": engine.events_seen,
        "timer_wakes": engine.timer_wakes,
        "events_per_s": round(engine.events_seen / elapsed),
        "steps_per_s": round((engine.events_seen + engine.timer_wakes) / elapsed),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""The benchmark's report: the human table, the targets (pass/fail) and the summary JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from benchkit import Measured

SCENARIOS: Final[tuple[tuple[str, str, str], ...]] = (
    ("raw", "(a) aiokafka raw batches", "events_per_s_aiokafka_raw"),
    ("bare", "(b) Faust bare agent", "events_per_s_faust_bare"),
    ("naive", "(c) Faust naive design", "events_per_s_faust_naive"),
    ("full", "(d) churnstream worker", "events_per_s_full"),
    ("quix", "(e) Quix Streams peer", "events_per_s_quix_peer"),
    ("scale_out", "scale-out: 2 workers, 4 partitions", "events_per_s_scale_out"),
)


@dataclass(frozen=True, slots=True)
class Target:
    """One goal the lead works towards, and whether this run met it (None: not measured)."""

    name: str
    goal: str
    value: float | None
    met: bool | None


def _ratio(top: Measured | None, bottom: Measured | None) -> float | None:
    """Return top's rate over bottom's, both over the same first records of the input.

    A capped scenario covers only the start of the input, and the input's mix changes
    along it (the simulator's sign-ups come first), so each ratio compares the two rates
    over the records both processed.
    """
    if top is None or bottom is None:
        return None
    common = min(top.total, bottom.total)
    top_rate, bottom_rate = top.events_per_s_upto(common), bottom.events_per_s_upto(common)
    if top_rate is None or bottom_rate is None or bottom_rate <= 0:
        return None
    return top_rate / bottom_rate


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def targets(measured: Mapping[str, Measured], extra: Mapping[str, Any]) -> list[Target]:
    """Return the issue's targets with this run's values."""
    full, bare, naive = measured.get("full"), measured.get("bare"), measured.get("naive")
    d_to_b, d_to_c = _ratio(full, bare), _ratio(full, naive)
    p99 = extra.get("p99_ms_at_half_load")
    restore = extra.get("restore_s_per_million_customers")
    state = extra.get("state_bytes_per_customer")
    return [
        Target("full / bare", ">= 0.8", d_to_b, _at_least(d_to_b, 0.8)),
        Target("full / naive", ">= 3.0", d_to_c, _at_least(d_to_c, 3.0)),
        Target("p99 ms at half load", "<= 50", p99, _at_most(p99, 50.0)),
        Target("restore s per 1M customers", "<= 60", restore, _at_most(restore, 60.0)),
        Target("state bytes per customer", "<= 1024", state, _at_most(state, 1024.0)),
    ]


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def table(measured: Mapping[str, Measured], errors: Mapping[str, str]) -> list[str]:
    """Return the throughput table, one line per scenario."""
    lines = [
        f"{'scenario':36} {'records':>17} {'events/s':>9} {'CPU-s/M':>8} "
        f"{'broker CPU-s/M':>14} {'peak RSS MB':>11}  status",
    ]
    for key, title, _ in SCENARIOS:
        result = measured.get(key)
        if result is None:
            lines.append(
                f"{title:36} {'-':>17} {'-':>9} {'-':>8} {'-':>14} {'-':>11}  "
                f"{errors.get(key, 'not run')}"
            )
            continue
        broker = None
        if result.broker_cpu_s is not None and result.records:
            broker = result.broker_cpu_s * 1e6 / result.records
        status = "complete" if result.complete else "partial (time cap)"
        lines.append(
            f"{title:36} {f'{result.records:,}/{result.total:,}':>17} "
            f"{_fmt(result.events_per_s):>9} {_fmt(result.cpu_s_per_million, 1):>8} "
            f"{_fmt(broker, 1):>14} {_fmt(result.peak_rss_mb):>11}  {status}"
        )
    return lines


def ratio_lines(measured: Mapping[str, Measured]) -> list[str]:
    """Return one line per ratio d/b, d/c, d/e with the records it was taken over."""
    lines = []
    for other in ("bare", "naive", "quix"):
        top, bottom = measured.get("full"), measured.get(other)
        value = _ratio(top, bottom)
        if top is None or bottom is None or value is None:
            lines.append(f"  full / {other:6} -")
            continue
        common = min(top.total, bottom.total)
        lines.append(
            f"  full / {other:6} {value:6.2f}  over the first {common:,} records "
            f"({top.events_per_s_upto(common):,.0f} vs {bottom.events_per_s_upto(common):,.0f}"
            " events/s)"
        )
    return lines


def target_lines(found: list[Target]) -> list[str]:
    """Return one line per target: value, goal, PASS/FAIL/not measured."""
    lines = []
    for target in found:
        verdict = "not measured" if target.met is None else "PASS" if target.met else "FAIL"
        lines.append(f"  {target.name:30} {_fmt(target.value, 2):>10}  {target.goal:8} {verdict}")
    return lines


def summary(
    measured: Mapping[str, Measured], extra: Mapping[str, Any], found: list[Target]
) -> dict[str, Any]:
    """Return the JSON summary: the keys INTERFACES.md promises first, then the details."""
    out: dict[str, Any] = {}
    for key, _, json_key in SCENARIOS:
        result = measured.get(key)
        out[json_key] = None if result is None else round(result.events_per_s, 1)
    for key in (
        "p50_ms_at_half_load",
        "p99_ms_at_half_load",
        "restore_s_per_million_customers",
        "state_bytes_per_customer",
        "peak_rss_mb",
    ):
        out[key] = extra.get(key)
    out["cpu_s_per_million_events"] = {
        key: round(result.cpu_s_per_million, 2) for key, result in measured.items()
    }
    for name, top, bottom in (
        ("ratio_full_to_bare", "full", "bare"),
        ("ratio_full_to_naive", "full", "naive"),
        ("ratio_full_to_quix", "full", "quix"),
    ):
        value = _ratio(measured.get(top), measured.get(bottom))
        out[name] = None if value is None else round(value, 3)
        pair = [measured.get(top), measured.get(bottom)]
        if all(pair):
            out[name + "_over_records"] = min(m.total for m in pair if m is not None)
    out["partial"] = sorted(key for key, result in measured.items() if not result.complete)
    out["targets"] = {
        target.name: {"value": target.value, "goal": target.goal, "met": target.met}
        for target in found
    }
    out.update({key: value for key, value in extra.items() if key not in out})
    return out

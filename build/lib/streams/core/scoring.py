"""The per-customer step: ``(state, event or timer, model) -> (new state, outputs)``.

Each customer's own clock decides what happens: before an event at time t, the customer's
own timers due up to t fire (label resolutions, grid snapshots, silence milestones) at their
own due times. So the outputs depend only on the customer's events and the model, never on
how far the partition's watermark had moved: replay and live give the same scores.

The step updates the state it is given and returns it; callers store the returned state.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

from streams.core.config import ScoringConfig
from streams.core.events import Event, OrderEvent, event_id_of
from streams.core.features import compute_features, decay_to, prior_of
from streams.core.labels import mark_order, next_resolution_s, resolve_due, take_snapshot
from streams.core.model import ChurnModel, FrozenLinearModel
from streams.core.policy import next_band
from streams.core.reasons import DeferredReasons
from streams.core.records import (
    ChurnScore,
    RiskChange,
    TrainingExample,
    from_s,
    stable_id,
    to_s,
)
from streams.core.state import CustomerState
from streams.core.update import apply_event, is_new_order

_DAY_S = 86_400.0


@dataclass(slots=True)
class StepOutput:
    """What one step produced, in the order it happened."""

    scores: list[ChurnScore] = field(default_factory=list)
    risk_changes: list[RiskChange] = field(default_factory=list)
    training_examples: list[TrainingExample] = field(default_factory=list)

    def extend(self, other: StepOutput) -> None:
        """Append everything ``other`` holds."""
        self.scores.extend(other.scores)
        self.risk_changes.extend(other.risk_changes)
        self.training_examples.extend(other.training_examples)


def new_state(customer_id: str, first_seen_s: float, config: ScoringConfig) -> CustomerState:
    """Return the state of a customer first seen at ``first_seen_s``."""
    state = CustomerState(customer_id, first_seen_s, first_seen_s, first_seen_s)
    state.next_snapshot_s = _first_grid_point(customer_id, first_seen_s, config)
    return state


def process_event(
    state: CustomerState | None, event: Event, model: ChurnModel, config: ScoringConfig
) -> tuple[CustomerState, StepOutput]:
    """Return the customer's state after ``event`` and the outputs it caused.

    A late event (older than the customer's clock) is folded in at the customer's clock.
    """
    event_s = to_s(event.event_time)
    if state is None:
        state = new_state(event.customer_id, event_s, config)
    out = StepOutput()
    _catch_up(state, event_s, model, config, out)
    clock_s = state.clock_s
    now_s = clock_s if clock_s > event_s else event_s  # max(event_s, clock_s)
    _move_clock(state, now_s, config)
    if isinstance(event, OrderEvent) and is_new_order(state, event):
        mark_order(state, now_s, config.horizon_s)
    apply_event(state, event, now_s, config)
    _score(
        state,
        now_s,
        trigger=event.event_type,
        source_id=event_id_of(event),
        model=model,
        config=config,
        out=out,
    )
    state.next_wake_s = _next_wake(state, config)
    return state, out


def process_timer(
    state: CustomerState, watermark_s: float, model: ChurnModel, config: ScoringConfig
) -> tuple[CustomerState, StepOutput]:
    """Return the state after firing every timer of the customer due by ``watermark_s``."""
    out = StepOutput()
    _catch_up(state, watermark_s, model, config, out)
    return state, out


def score_as_of(
    state: CustomerState, as_of_s: float, model: ChurnModel, config: ScoringConfig
) -> tuple[CustomerState, StepOutput]:
    """Return the state after firing timers up to ``as_of_s`` and scoring once more then.

    The final score is ``out.scores[-1]``; replay uses it for the as-of table, the worker
    may use it to answer reads.
    """
    out = StepOutput()
    _catch_up(state, as_of_s, model, config, out)
    now_s = max(as_of_s, state.clock_s)
    _move_clock(state, now_s, config)
    _score(state, now_s, trigger="timer", source_id="as_of", model=model, config=config, out=out)
    state.next_wake_s = _next_wake(state, config)
    return state, out


def _catch_up(
    state: CustomerState,
    until_s: float,
    model: ChurnModel,
    config: ScoringConfig,
    out: StepOutput,
) -> None:
    while state.next_wake_s is not None and state.next_wake_s <= until_s:
        wake_s = max(state.next_wake_s, state.clock_s)
        _move_clock(state, wake_s, config)
        out.training_examples.extend(resolve_due(state, wake_s, config.horizon_s))
        features = None
        if wake_s >= state.next_snapshot_s:
            interval_s = config.snapshot_interval_days * _DAY_S
            skipped = math.floor((wake_s - state.next_snapshot_s) / interval_s) + 1
            state.next_snapshot_s += skipped * interval_s
            prior = prior_of(state, wake_s, config)
            features = compute_features(state, wake_s, prior)
            take_snapshot(
                state,
                wake_s,
                features=features,
                prior=prior,
                model_version=model.version,
                max_pending=config.max_pending_snapshots,
            )
        _score(
            state,
            wake_s,
            trigger="timer",
            source_id="",
            model=model,
            config=config,
            out=out,
            features=features,
        )
        state.next_wake_s = _next_wake(state, config)


def _move_clock(state: CustomerState, now_s: float, config: ScoringConfig) -> None:
    clock_s = state.clock_s
    state.clock_s = clock_s = now_s if now_s > clock_s else clock_s  # max(clock_s, now_s)
    decay_to(state, clock_s, config)


def _score(
    state: CustomerState,
    now_s: float,
    *,
    trigger: str,
    source_id: str,
    model: ChurnModel,
    config: ScoringConfig,
    out: StepOutput,
    features: dict[str, float] | None = None,
) -> None:
    if features is None:
        features = compute_features(state, now_s, prior_of(state, now_s, config))
    learned = model.examples_learned
    if learned == 0 and config.prior_blend_examples > 0:
        # The model's share of the blend below is 0.0: skip predicting what it multiplies
        # (0.0 * p + 1.0 * c is c for every probability p, so the score is the same).
        score = _cold_start(features, config)
    elif learned < config.prior_blend_examples:
        # Until enough labels arrived the prior keeps a share of the vote.
        weight = learned / config.prior_blend_examples
        score = weight * model.predict_proba(features) + (1.0 - weight) * _cold_start(
            features, config
        )
    else:
        score = model.predict_proba(features)
    contributions_of = getattr(model, "contributions", None)
    contributions: Mapping[str, float] | Callable[[], Mapping[str, float]] | None = None
    if learned > 0 and contributions_of:
        if isinstance(model, FrozenLinearModel):
            # read-only, so its contributions can wait until the reasons are read
            contributions = partial(contributions_of, features)
        else:
            contributions = contributions_of(features)
    reasons = DeferredReasons(state, now_s, contributions, config.max_reasons)
    band = next_band(score, state.band, state.band_since_s, now_s, config)
    as_of = from_s(now_s)
    as_of_ms = int(now_s * 1000)
    version = model.version
    out.scores.append(
        ChurnScore(
            event_id=stable_id("score", state.customer_id, as_of_ms, trigger, source_id, version),
            customer_id=state.customer_id,
            score=score,
            band=band,
            reasons=reasons,
            model_version=version,
            as_of=as_of,
            trigger=trigger,
        )
    )
    if band != state.band:
        out.risk_changes.append(
            RiskChange(
                event_id=stable_id(
                    "risk",
                    state.customer_id,
                    as_of_ms,
                    trigger,
                    source_id,
                    state.band,
                    band,
                    version,
                ),
                customer_id=state.customer_id,
                from_band=state.band,
                to_band=band,
                score=score,
                previous_score=state.last_score,
                reasons=reasons.resolve(),
                model_version=version,
                as_of=as_of,
                trigger=trigger,
            )
        )
        state.band = band
        state.band_since_s = now_s
    state.last_score = score


def _cold_start(features: dict[str, float], config: ScoringConfig) -> float:
    """Return the cold-start P(churn): the BG/NBD prior plus the lost-sales adjustment."""
    lost_sales = min(features["unrecovered_failed_payments"], 3.0)
    log_odds = features["prior_logit"] + config.failed_payment_log_odds * lost_sales
    return 1.0 / (1.0 + math.exp(-log_odds))


def _first_grid_point(customer_id: str, after_s: float, config: ScoringConfig) -> float:
    """Return the customer's first snapshot time after ``after_s``.

    The grid's phase comes from a stable hash of the id (not Python's salted ``hash``), so
    snapshots of all customers spread over the interval instead of firing at once.
    """
    interval_s = config.snapshot_interval_days * _DAY_S
    phase_s = float(zlib.crc32(customer_id.encode()) % max(1, int(interval_s)))
    steps = math.floor((after_s - phase_s) / interval_s) + 1
    return phase_s + steps * interval_s


def _next_wake(state: CustomerState, config: ScoringConfig) -> float | None:
    """Return the customer's next timer: snapshot, label resolution or silence milestone."""
    now_s = state.clock_s
    last_active_s = max(
        state.last_order_s or state.first_seen_s, state.last_visit_s or state.first_seen_s
    )
    max_silence_s = config.max_silence_days * _DAY_S
    # The earliest of the candidates, as min() of them would pick it (the first on ties).
    best = next_resolution_s(state, config.horizon_s) if state.pending else None
    snapshot_s = state.next_snapshot_s
    if snapshot_s - last_active_s <= max_silence_s and (best is None or snapshot_s < best):
        best = snapshot_s
    milestone_s = _next_milestone(state, now_s, config)
    if (
        milestone_s is not None
        and milestone_s - last_active_s <= max_silence_s
        and (best is None or milestone_s < best)
    ):
        best = milestone_s
    return best


def _next_milestone(state: CustomerState, now_s: float, config: ScoringConfig) -> float | None:
    anchor_s = state.last_order_s if state.last_order_s is not None else state.first_seen_s
    best: float | None = None
    for offset_days in config.silence_days:
        due_s = anchor_s + offset_days * _DAY_S
        if due_s > now_s and (best is None or due_s < best):
            best = due_s
    order_gap_days = state.order_gap_days
    if order_gap_days:
        for multiple in config.silence_gap_multiples:
            due_s = anchor_s + multiple * order_gap_days * _DAY_S
            if due_s > now_s and (best is None or due_s < best):
                best = due_s
    if state.last_visit_s is not None and state.visit_gap_days:
        for multiple in config.silence_gap_multiples:
            due_s = state.last_visit_s + 2 * multiple * state.visit_gap_days * _DAY_S
            if due_s > now_s and (best is None or due_s < best):
                best = due_s
    return best

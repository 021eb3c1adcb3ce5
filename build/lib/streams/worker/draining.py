"""Writing a closed flush window out a chunk at a time, between records.

When a flush window closes, its customers' latest scores, their changed states and the
acknowledgements of its records are due. Writing them all at once stops the agent for tens
of milliseconds (a changelog record per state, a produce per score, an ack per record), and
every record that arrives meanwhile waits: that is the half-load latency's tail. Instead the
agent closes the window (takes its dirty customer ids) and then, after each list of records
it processes, writes a small chunk of what the closed window owes; the window's records are
acknowledged only when all of it is written, so offsets are still committed only for
records whose effects are stored.

A state written here may already include records of the next window (the cache holds one
state per customer): that is safe, because each state remembers the input offsets it
applied, so after a crash those records are skipped when they are delivered again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.core.records import ChurnScore


@dataclass(slots=True)
class PartitionStates:
    """The changed customers of one partition in a closed window."""

    partition: int
    context: Any  # a record of the partition: table writes take their partition from it
    customer_ids: list[str]


@dataclass(slots=True)
class Closed:
    """A closed window and how far its writing has got."""

    events: list[Any]
    scores: list[ChurnScore]
    states: list[PartitionStates]
    generation: int
    scores_done: int = 0
    partitions_done: int = 0
    ids_done: int = 0
    acks_done: int = 0
    partitions: list[int] = field(default_factory=list)
    started_s: float = 0.0  # when its writing began (monotonic seconds)
    units: int = 0  # what writing all of it costs, in budget units
    units_spent: int = 0


class WindowDrain:
    """Writes out one closed window at a time; each call does at most ``budget`` items.

    Scores and states go in chunks of up to ``chunk`` (a produce batch, a RocksDB batch),
    acknowledgements eight times as many per call; a score or a state costs one unit of
    budget, an acknowledgement an eighth. States become durable in the background
    (``streams/worker/state_writes.py``): the records are acknowledged only once
    ``states_settled()`` says all of them are, so a committed offset's effects are never lost.
    """

    def __init__(
        self,
        send_scores: Callable[[Sequence[ChurnScore]], Awaitable[None]],
        write_states: Callable[[PartitionStates, Sequence[str]], Awaitable[None]],
        ack: Callable[[Sequence[Any]], None],
        on_done: Callable[[list[int]], None],
        chunk: int = 64,
        states_settled: Callable[[], bool] = lambda: True,
        wait_states: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.send_scores = send_scores
        self.write_states = write_states
        self.ack = ack
        self.on_done = on_done
        self.states_settled = states_settled
        self.wait_states = wait_states
        self.chunk = chunk
        self.closed: Closed | None = None

    @property
    def pending(self) -> bool:
        """Return whether a closed window is still being written."""
        return self.closed is not None

    def start(self, closed: Closed, now_s: float = 0.0) -> None:
        """Begin writing ``closed`` (the previous window must be finished or dropped)."""
        if self.closed is not None:
            raise RuntimeError("the previous window is still being written")
        closed.partitions = [part.partition for part in closed.states]
        closed.started_s = now_s
        closed.units = (
            len(closed.scores)
            + sum(max(1, len(part.customer_ids)) for part in closed.states)
            + -(-len(closed.events) // 8)
        )
        self.closed = closed

    def due(self, now_s: float, spread_s: float) -> int:
        """Return the budget that keeps the writing on pace to end ``spread_s`` after it began.

        Writing a window in even steps over most of the next window's time, rather than as
        fast as records come, keeps the extra work per record small and steady: a burst of
        writes right after each window closes delays every record behind it.

        >>> drain = WindowDrain(None, None, None, None)  # type: ignore[arg-type]
        >>> drain.start(Closed(["e"] * 16, [], [], 0), now_s=10.0)  # 2 units of acks
        >>> drain.due(10.5, spread_s=1.0), drain.due(11.5, spread_s=1.0)
        (1, 2)
        """
        closed = self.closed
        if closed is None:
            return 0
        share = min(1.0, max(0.0, now_s - closed.started_s) / spread_s) if spread_s > 0 else 1.0
        return max(0, -(-int(closed.units * share * 1000) // 1000) - closed.units_spent)

    def drop(self) -> None:
        """Forget the closed window: its records are not acknowledged (after a rebalance)."""
        self.closed = None

    async def advance(self, budget: int, generation: int) -> bool:
        """Write up to ``budget`` items (scores, states, acks); True when done.

        Scores first (sent before the states that produced them: a crash between the two
        re-sends them rather than losing them), then states, then the acknowledgements.
        ``generation`` is the caller's rebalance generation: a window of an older one is
        dropped, never written.
        """
        closed = self.closed
        size = self.chunk
        while closed is not None and budget > 0:
            if closed.generation != generation or self.closed is not closed:
                self.closed = None
                return True
            take = max(1, min(size, budget))
            if closed.scores_done < len(closed.scores):
                done = closed.scores_done
                scores = closed.scores[done : done + take]
                closed.scores_done += len(scores)
                budget -= len(scores)
                closed.units_spent += len(scores)
                await self.send_scores(scores)
            elif closed.partitions_done < len(closed.states):
                part = closed.states[closed.partitions_done]
                chunk = part.customer_ids[closed.ids_done : closed.ids_done + take]
                closed.ids_done += len(chunk)
                if closed.ids_done >= len(part.customer_ids):
                    closed.partitions_done += 1
                    closed.ids_done = 0
                budget -= max(1, len(chunk))
                closed.units_spent += max(1, len(chunk))
                if chunk:
                    await self.write_states(part, chunk)
            elif closed.acks_done < len(closed.events):
                if not closed.acks_done and not self.states_settled():
                    return False  # again later: the states are not all durable yet
                done = closed.acks_done
                records = closed.events[done : done + take * 8]
                closed.acks_done += len(records)
                budget -= -(-len(records) // 8)
                closed.units_spent += -(-len(records) // 8)
                self.ack(records)
            else:
                if not self.states_settled():
                    return False  # a window without records: its states still settle
                self._done(closed)
                return True
        if (
            closed is not None
            and self.closed is closed
            and closed.acks_done >= len(closed.events)
            and closed.partitions_done >= len(closed.states)
            and closed.scores_done >= len(closed.scores)
            and self.states_settled()
        ):
            self._done(closed)  # the budget ran out exactly at the end
        return self.closed is None

    def _done(self, closed: Closed) -> None:
        self.closed = None
        self.on_done(closed.partitions)

    async def finish(self, generation: int) -> None:
        """Write everything the closed window still owes."""
        while not await self.advance(1_000_000, generation):
            if self.wait_states is not None:
                await self.wait_states()

"""Writing a closed flush window out a chunk at a time, between records.

When a flush window closes, its customers' latest scores, their changed states and the
acknowledgements of its records are due. Writing them all at once stops the agent for tens
of milliseconds (a changelog record per state, a produce per score, an ack per record), and
every record that arrives meanwhile waits: that is the half-load latency's tail. Instead the
agent closes the window (takes its dirty customer ids) and then, after each record it
processes, writes a small chunk of what the closed window owes; the window's records are
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


class WindowDrain:
    """Writes out one closed window at a time; each call does at most ``budget`` items."""

    def __init__(
        self,
        send_score: Callable[[ChurnScore], Awaitable[None]],
        write_states: Callable[[PartitionStates, Sequence[str]], None],
        ack: Callable[[Any], Awaitable[None]],
        on_done: Callable[[list[int]], None],
        state_chunk: int = 64,
    ) -> None:
        self.send_score = send_score
        self.write_states = write_states
        self.ack = ack
        self.on_done = on_done
        self.state_chunk = state_chunk
        self.closed: Closed | None = None

    @property
    def pending(self) -> bool:
        """Return whether a closed window is still being written."""
        return self.closed is not None

    def start(self, closed: Closed) -> None:
        """Begin writing ``closed`` (the previous window must be finished or dropped)."""
        if self.closed is not None:
            raise RuntimeError("the previous window is still being written")
        closed.partitions = [part.partition for part in closed.states]
        self.closed = closed

    def drop(self) -> None:
        """Forget the closed window: its records are not acknowledged (after a rebalance)."""
        self.closed = None

    async def advance(self, budget: int, generation: int) -> bool:
        """Write up to ``budget`` items (scores, chunks of states, acks); True when done.

        Scores first (sent before the states that produced them: a crash between the two
        re-sends them rather than losing them), then states, then the acknowledgements.
        ``generation`` is the caller's rebalance generation: a window of an older one is
        dropped, never written.
        """
        closed = self.closed
        while closed is not None and budget > 0:
            if closed.generation != generation or self.closed is not closed:
                self.closed = None
                return True
            if closed.scores_done < len(closed.scores):
                score = closed.scores[closed.scores_done]
                closed.scores_done += 1
                budget -= 1
                await self.send_score(score)
            elif closed.partitions_done < len(closed.states):
                part = closed.states[closed.partitions_done]
                chunk = part.customer_ids[closed.ids_done : closed.ids_done + self.state_chunk]
                closed.ids_done += len(chunk)
                if closed.ids_done >= len(part.customer_ids):
                    closed.partitions_done += 1
                    closed.ids_done = 0
                budget -= max(1, len(chunk) // 8)  # a state write is cheap next to a send
                if chunk:
                    self.write_states(part, chunk)
            elif closed.acks_done < len(closed.events):
                event = closed.events[closed.acks_done]
                closed.acks_done += 1
                budget -= 1
                await self.ack(event)
            else:
                self.closed = None
                self.on_done(closed.partitions)
                return True
        return self.closed is None

    async def finish(self, generation: int) -> None:
        """Write everything the closed window still owes."""
        while not await self.advance(1_000_000, generation):
            pass

"""The feeder's view of its tasks (feeder thread only, except the ``ready`` flags that wakes
set): one ``Feed`` per task, and one ``Dealer`` per task whose results other tasks of the
feeder read (a chain).

    upstream Task --take_runs--> Dealer --blocks of stride results, in turn--> Feed.pending
    Feed.pending --submitted by the feeder, keeping the slots the results held--> Pool
"""
from __future__ import annotations

import collections
from typing import Any

from ._task import Task


class Feed:
    """One task as the feeder sees it."""

    __slots__ = ("dealer", "ended", "pending", "ready", "reserved", "reserving", "task")

    def __init__(self, task: Task, dealer: Dealer | None, reserving: bool) -> None:
        self.task = task
        self.dealer = dealer
        # an IterableSource of the IMap with a reader thread: its read-ahead holds slots
        self.reserving = reserving
        self.reserved = 0
        # chained: results of the upstream dealt to this task, as [values, errors, offset]
        self.pending: collections.deque[list[Any]] = collections.deque()
        self.ready = True        # may have items: cleared when the input had none
        self.ended = False

    def pending_count(self) -> int:
        return sum(len(chunk[0]) - chunk[2] for chunk in self.pending)

    def holding(self) -> int:
        """Buffer slots this task holds: items fed and not taken, reserved, dealt."""
        task = self.task
        return task.fed - task.released() + self.reserved + self.pending_count()

    def __repr__(self) -> str:
        return (f"<Feed task={self.task.id} ready={self.ready} ended={self.ended} "
                f"reserved={self.reserved} pending={self.pending_count()}>")


class Dealer:
    """Deals the items of one input to the tasks that read it, in blocks of ``stride``, in
    turn, in the order the readers were added (so that, as in the original weave, each
    reader gets one stride per round). The input is an ``upstream`` task's results (a
    chain) or a ``source`` that several tasks were given (papy's spawned copies)."""

    def __init__(self, stride: int, upstream: Task | None = None, source: Any = None,
                 same_imap: bool = False) -> None:
        self.upstream = upstream
        self.source = source
        self.stride = stride
        self.same_imap = same_imap     # its results hold our slots already: move them over
        self.readers: list[Feed] = []
        self.turn = 0
        self.block_left = stride
        self.ended = False

    def pull(self, count: int | None) -> int:
        """Take up to ``count`` ready items of the input (None: all) and deal them; returns
        how many. At the input's end every reader is woken to see it."""
        if self.upstream is None:
            return self._pull_source(count or 1)
        runs = self.upstream.take_runs(count)
        if runs is None:
            self.ended = True
            self.wake()
            return 0
        taken = 0
        for _, values, errors in runs:
            self._deal(values, errors)
            taken += len(values)
        if taken:
            self.upstream.wake_feeder_if_due()
        return taken

    def _pull_source(self, count: int) -> int:
        try:
            items = self.source.take(count)
        except BaseException as exc:  # noqa: BLE001 - the error of the next position
            self._deal([None], {0: exc})
            return 1
        if items is None:
            self.ended = True
            self.wake()
            return 0
        if items:
            self._deal(items, None)
        return len(items)

    def _deal(self, values: list[Any], errors: dict[int, BaseException] | None) -> None:
        if len(self.readers) == 1:
            reader = self.readers[0]
            reader.pending.append([values, errors, 0])
            reader.ready = True
            return
        offset = 0
        while offset < len(values):
            count = min(self.block_left, len(values) - offset)
            chunk = values[offset:offset + count]
            chunk_errors = None
            if errors:
                chunk_errors = {p - offset: e for p, e in errors.items()
                                if offset <= p < offset + count} or None
            reader = self.readers[self.turn]
            reader.pending.append([chunk, chunk_errors, 0])
            reader.ready = True
            offset += count
            self.block_left -= count
            if self.block_left == 0:
                self.turn = (self.turn + 1) % len(self.readers)
                self.block_left = self.stride

    def remove_reader(self, feed: Feed) -> None:
        self.readers.remove(feed)
        self.turn, self.block_left = 0, self.stride

    def wake(self) -> None:
        for feed in self.readers:
            feed.ready = True

"""Watermarks of the Kafka source: event time minus an out-of-orderness bound per
partition, moved on by wall clock when a caught-up partition is idle, and combined with
the same read's other partitions in this process (see `EventTimeWatermark`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from apache_beam.io.iobase import WatermarkEstimator
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP, Timestamp

if TYPE_CHECKING:
    from connectors.kafka_source import PartitionRead

PartitionKey = tuple[str, int]  # (Kafka topic, partition)
_MICROS = 1_000_000


class PeerWatermarks:
    """The last watermark of every partition of each read in this process, by read id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: dict[str, dict[PartitionKey, tuple[int, float]]] = {}
        self._heard: dict[str, set[PartitionKey]] = {}  # partitions read in this process

    def combine(self, read: PartitionRead, own_us: int, now: float, expiry_s: float) -> int:
        """Record `own_us` for `read`'s partition; return the min over the partitions of
        the read heard of within `expiry_s` (one never heard of counts as the minimum).

        In a bounded read, a partition read in this process counts until it finishes,
        however long it has been silent: the runner may only have left it unscheduled, and
        leaving it out would let the estimate run ahead of what it reads next (to +inf once
        its peers are done). A silent partition holds a bounded read back, which ends; an
        unbounded one would be held for as long as the partition is read elsewhere.
        """
        key = (read.topic, read.partition)
        with self._lock:
            known = self._reads.setdefault(read.read_id, {})
            for member in read.members:
                known.setdefault(member, (MIN_TIMESTAMP.micros, now))
            known[key] = (own_us, now)
            heard = self._heard.setdefault(read.read_id, set())
            heard.add(key)
            kept = heard if read.stop is not None else {key}
            return min(wm for k, (wm, at) in known.items() if k in kept or now - at < expiry_s)

    def finish(self, read: PartitionRead, now: float) -> None:
        """`read`'s partition is done: it holds nothing back any more."""
        key = (read.topic, read.partition)
        with self._lock:
            self._reads.setdefault(read.read_id, {})[key] = (MAX_TIMESTAMP.micros, now)
            self._heard.setdefault(read.read_id, set()).add(key)

    def finished(self, read: PartitionRead, now: float, expiry_s: float) -> bool:
        """Whether `read` is done as far as this process can tell: every partition read here
        has finished, however long since it was last heard of (a partition the runner has
        not scheduled for a while is still reading), and the others, never heard of here
        (read elsewhere), stayed silent for `expiry_s` since this process first counted
        them (`combine`)."""
        with self._lock:
            known = self._reads.get(read.read_id, {})
            heard = self._heard.get(read.read_id, set())
            for member in read.members:
                wm, since = known.get(member, (MIN_TIMESTAMP.micros, now))
                if member in heard and wm < MAX_TIMESTAMP.micros:
                    return False
                if member not in heard and now - since < expiry_s:
                    return False
            return True

    def unfinished(self, read: PartitionRead, now: float) -> list[tuple[PartitionKey, float]]:
        """The partitions of `read` read in this process and not finished, each with the
        seconds since it was last heard of: what a finished partition is waiting for."""
        with self._lock:
            known = self._reads.get(read.read_id, {})
            return [
                (k, now - at)
                for k in sorted(self._heard.get(read.read_id, set()))
                for wm, at in [known[k]]
                if wm < MAX_TIMESTAMP.micros
            ]


_PEERS = PeerWatermarks()


class WatermarkState(NamedTuple):
    """What survives a checkpoint: the partition's own watermark, the largest event time
    seen, when (wall clock, s) the last event was read or the read began, the read, and
    whether the end of a bounded read (+inf) has been reported (`EventTimeWatermark.end`)."""

    watermark_us: int
    max_event_us: int | None
    last_event_wall_s: float
    read: PartitionRead
    end_reported: bool = False


class EventTimeWatermark(WatermarkEstimator):  # type: ignore[misc]
    """A partition's watermark: max event time seen - `lag_s`, never moving back.

    Idle: once the reader is caught up (`note_caught_up(True)`) and no event has been read
    for `idle_s`, the watermark moves to wall clock - `lag_s`. Holding the last value would
    hold the pipeline's watermark (the min over partitions) for as long as any partition is
    quiet, which is normal with keys hashed over partitions. Wall clock - lag is right when
    event times follow the wall clock within `lag_s` (live traffic); a historic replay
    should use `stop_at_end`, where a caught-up partition is a finished one. Caught up is
    required so that a backlog the broker is slow to serve is not taken for idleness.

    Peers: the estimate reported is the min of this partition's watermark and those of the
    read's other partitions processed in this process (`PeerWatermarks`). Prism needs it: it
    keeps one estimate per SDF stage, the min over the last finished bundle's residuals
    only, so a partition read alone in a bundle would set the watermark for all. The min
    is never above this partition's own watermark, so runners that combine per-residual
    estimates (Flink, Dataflow) are unaffected, except that partitions processed elsewhere
    hold the estimate until `expiry_s` passes without news of them.

    End: `finish()` puts the partition's own watermark at +inf for good (its peers stop
    waiting for it); `read_finished()` says whether the whole read is done, and `end()`
    marks the checkpoint that reports it (the source's end marker).

    `observe_timestamp` (Beam calls it for every output) does nothing: only decoded event
    times (`observe_event`) move the watermark.
    """

    def __init__(
        self,
        state: WatermarkState,
        lag_s: float,
        idle_s: float,
        expiry_s: float,
        clock: Callable[[], float] = time.time,
        peers: PeerWatermarks = _PEERS,
    ) -> None:
        self._state = state
        self._lag_us = round(lag_s * _MICROS)
        self._idle_s, self._expiry_s = idle_s, expiry_s
        self._clock, self._peers = clock, peers
        self._caught_up = False

    def observe_timestamp(self, timestamp: Timestamp) -> None:
        pass

    def observe_event(self, event_us: int) -> None:
        """An event with this event time (microseconds since the epoch) was read."""
        s = self._state
        max_event = event_us if s.max_event_us is None else max(s.max_event_us, event_us)
        self._state = s._replace(max_event_us=max_event, last_event_wall_s=self._clock())
        self._caught_up = False

    def note_caught_up(self, caught_up: bool) -> None:
        """Whether the reader has read everything the partition holds right now."""
        self._caught_up = caught_up

    def finish(self) -> None:
        """The partition has been read to its end: its own watermark is +inf from now on,
        in this process's peer table and in every checkpoint after this one."""
        self._state = self._state._replace(watermark_us=MAX_TIMESTAMP.micros)
        self._peers.finish(self._state.read, self._clock())

    def read_finished(self) -> bool:
        """Whether the whole read is done (`PeerWatermarks.finished`): every partition read
        in this process has finished, however long it has been silent (it may only be
        waiting for the runner to schedule it; +inf before it finishes would put everything
        it reads next behind the watermark). In a bounded read the combined watermark
        (`current_watermark`) keeps such partitions too. With peers off (`expiry_s` <= 0),
        only finished partitions are heard of, so a partition counts the read as done once
        it has finished itself: right where the runner combines per-residual estimates,
        which is what turning peers off is for."""
        return self._peers.finished(self._state.read, self._clock(), self._expiry_s)

    def unfinished_peers(self) -> list[tuple[PartitionKey, float]]:
        """`PeerWatermarks.unfinished` for this partition's read."""
        return self._peers.unfinished(self._state.read, self._clock())

    def end(self) -> None:
        """The next checkpoint reports +inf: call once `read_finished()`, then checkpoint
        once more before the range is finished (see the source's end marker)."""
        self._state = self._state._replace(end_reported=True)

    def end_reported(self) -> bool:
        return bool(self._state.end_reported)

    def own_watermark(self) -> int:
        s, now = self._state, self._clock()
        wm = s.watermark_us
        if s.max_event_us is not None:
            wm = max(wm, s.max_event_us - self._lag_us)
        if self._caught_up and now - s.last_event_wall_s >= self._idle_s:
            wm = max(wm, round(now * _MICROS) - self._lag_us)
        self._state = s._replace(watermark_us=wm)
        return wm

    def current_watermark(self) -> Timestamp:
        own = self.own_watermark()
        if self._expiry_s <= 0:
            return Timestamp(micros=own)
        now = self._clock()
        return Timestamp(micros=self._peers.combine(self._state.read, own, now, self._expiry_s))

    def get_estimator_state(self) -> WatermarkState:
        return self._state


def element_stamp(
    event_us: int | None,
    limit_us: int,
    watermark: Timestamp | Callable[[], Timestamp],
) -> tuple[Timestamp, bool]:
    """(timestamp of a read record, whether its event time moves the watermark).

    A record is stamped with its event time. One without (undecodable), or whose time lies
    beyond `limit_us` (now + the allowed clock skew), is stamped with the partition's
    current watermark, and does not move it: intake quarantines it, and its quarantine row
    must land as soon as it is read. A stateful stage holds back elements stamped after its
    pending timers (the landing stage always has its next daily tick pending), so a row
    stamped later than the watermark waits for the watermark to get there: a record dated
    2100 would wait for 2100, and one stamped with its Kafka arrival time waits, in a
    replay of older events, until the end of the read (a bounded read) or until the
    watermark catches up with the wall clock. Its arrival time is kept in the message.
    Nor may a time beyond the limit move the watermark: every later event would be late.

    `watermark` may be given as a function, called only when needed: the partition's
    combined watermark is a lock and a scan of its peers, too dear for every record.

    Example: element_stamp(None, 10, Timestamp(micros=3)) == (Timestamp(micros=3), False)
    """
    if event_us is not None and event_us <= limit_us:
        return Timestamp(micros=event_us), True
    return (watermark if isinstance(watermark, Timestamp) else watermark()), False

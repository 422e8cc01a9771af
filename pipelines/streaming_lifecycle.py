"""The streaming shell of the lifecycle function: event-time timers over in-process state.

Per content key, every event is kept (`LifecycleReleaser`). Event-time timers release what
the watermark has made final: when a timer fires at time W, the same `content_lifecycle`
the batch path calls is evaluated over the content's events so far, and each request
whose history up to W changed is emitted with the transitions at or before W. So BREACHED
(at deadline + 1 ms) comes out once the watermark passes the deadline and not before, and
an action after the deadline later turns it into RESOLVED_LATE. An event behind what was
already released corrects the released past at once. At the final watermark every
transition is released, which is exactly the batch path's result.

Timers: one dynamic timer per distinct moment something may become final (tag = the
moment in microseconds), on a few shard keys, so a watermark that jumps fires them all in
one go. State lives in this process (`pipelines.process_state` says why and how it is made
durable).

Runners: this needs a runner that honours event-time timers (Prism; see docker/prism/).
Beam's FnApiRunner fires them early.
"""

from __future__ import annotations

import dataclasses
import threading
import zlib
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import apache_beam as beam
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from pipelines import process_state
from pipelines.lifecycle import content_lifecycle
from pipelines.model import EPOCH, ActionEvent, RequestEvent, RequestLifecycle, epoch_micros
from pipelines.policy import SlaPolicy

Event = RequestEvent | ActionEvent
ContentKey = tuple[str, str]


def to_timestamp(t: datetime) -> Timestamp:
    return Timestamp(micros=epoch_micros(t))


def from_timestamp(ts: Timestamp) -> datetime:
    return EPOCH + timedelta(microseconds=ts.micros)


def shard_of(key: ContentKey, shards: int) -> str:
    """A stable shard for a content key (the same in every process and run)."""
    return str(zlib.crc32(f"{key[0]}/{key[1]}".encode()) % shards)


@dataclasses.dataclass(frozen=True)
class ReleasedLifecycle:
    """A request's history as final up to `watermark`; `revision` counts the releases of
    this request in this run (a late event can change what was released at the same
    watermark), so the highest revision is the current one."""

    lifecycle: RequestLifecycle
    watermark: datetime
    revision: int


class LifecycleReleaser:
    """The per-content events and what was released of them; no Beam in here.

    `add` and `fire` return the releases to emit and the moments (microseconds) at which a
    timer must be set."""

    def __init__(self, policy: SlaPolicy, horizon: int | None = None) -> None:
        self._policy = policy
        self._events: dict[ContentKey, list[Event]] = defaultdict(list)
        self._emitted: dict[str, tuple[int, tuple[Any, ...]]] = {}
        self._armed: dict[ContentKey, int] = {}  # the earliest pending moment per content
        self._pending: dict[int, set[ContentKey]] = defaultdict(set)
        # Micros: the latest moment released (the watermark has passed it). A restarted job
        # starts at the previous run's, so that what was released stays released.
        self.horizon: int | None = horizon
        self.lock = threading.Lock()

    def add(self, event: Event) -> tuple[list[ReleasedLifecycle], list[int]]:
        key = event.content_key
        self._events[key].append(event)
        at = epoch_micros(event.event_time)
        if self.horizon is not None and at <= self.horizon:
            # Behind what was released: correct the released past now, up to the same
            # horizon. No timer goes behind the watermark: runners may not fire those.
            return self._release(key, self.horizon)
        return [], self._arm(key, at)

    def fire(self, moment: int) -> tuple[list[ReleasedLifecycle], list[int]]:
        self.horizon = moment if self.horizon is None else max(self.horizon, moment)
        releases: list[ReleasedLifecycle] = []
        arms: list[int] = []
        for key in sorted(self._pending.pop(moment, ())):
            if self._armed.get(key) != moment:
                continue  # re-armed earlier and already released past this moment
            del self._armed[key]
            found, more = self._release(key, self.horizon)
            releases += found
            arms += more
        return releases, arms

    def _arm(self, key: ContentKey, at: int) -> list[int]:
        current = self._armed.get(key)
        if current is not None and current <= at:
            return []
        self._armed[key] = at
        self._pending[at].add(key)
        return [at]

    def _release(self, key: ContentKey, up_to: int) -> tuple[list[ReleasedLifecycle], list[int]]:
        """Every request of `key` whose history up to `up_to` differs from what was
        released; the next moment beyond it to arm."""
        watermark = EPOCH + timedelta(microseconds=up_to)
        events = self._events[key]
        requests = [e for e in events if isinstance(e, RequestEvent)]
        actions = [e for e in events if isinstance(e, ActionEvent)]
        releases: list[ReleasedLifecycle] = []
        pending: list[datetime] = []
        for lc in content_lifecycle(requests, actions, self._policy):
            final = tuple(t for t in lc.transitions if t.at <= watermark)
            pending += [t.at for t in lc.transitions if t.at > watermark]
            signature = tuple((t.transition, t.at, t.disposition) for t in final)
            revision, released = self._emitted.get(lc.request.request_id, (0, ()))
            if final and released != signature:
                self._emitted[lc.request.request_id] = (revision + 1, signature)
                releases.append(
                    ReleasedLifecycle(
                        dataclasses.replace(lc, transitions=final), watermark, revision + 1
                    )
                )
        arms = self._arm(key, epoch_micros(min(pending))) if pending else []
        return releases, arms


class ReleaseLifecyclesFn(beam.DoFn):  # type: ignore[misc]
    """(shard, event) -> ReleasedLifecycle whenever a request's final history grows."""

    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)

    def __init__(self, policy: SlaPolicy, stage_id: str, horizon: int | None = None) -> None:
        self._policy = policy
        self._stage_id = stage_id
        self._horizon = horizon

    def setup(self) -> None:
        policy, horizon = self._policy, self._horizon
        self._state = process_state.shared(
            self._stage_id, lambda: LifecycleReleaser(policy, horizon)
        )

    def process(
        self,
        element: tuple[str, Event],
        release: Any = beam.DoFn.TimerParam(RELEASE),
    ) -> Iterator[ReleasedLifecycle]:
        with self._state.lock:
            releases, arms = self._state.add(element[1])
        self._set(release, arms)
        yield from releases

    @on_timer(RELEASE)  # type: ignore[untyped-decorator]
    def on_release(
        self,
        fired: Any = beam.DoFn.TimestampParam,
        release: Any = beam.DoFn.TimerParam(RELEASE),
    ) -> Iterator[ReleasedLifecycle]:
        with self._state.lock:
            releases, arms = self._state.fire(fired.micros)
        self._set(release, arms)
        yield from releases

    @staticmethod
    def _set(release: Any, moments: list[int]) -> None:
        for moment in moments:
            release.set(Timestamp(micros=moment), dynamic_timer_tag=str(moment))


class ReleaseLifecycles(beam.PTransform):  # type: ignore[misc]
    """Timestamped events -> ReleasedLifecycle, on the watermark (streaming path)."""

    def __init__(
        self, policy: SlaPolicy, shards: int = 1, released_through: datetime | None = None
    ) -> None:
        """`released_through`: what an earlier run of the job released up to (a restart);
        events at or before it are released at once, as late events are."""
        super().__init__()
        self._policy = policy
        self._shards = shards
        self._horizon = None if released_through is None else epoch_micros(released_through)
        self.stage_id = f"release-lifecycles-{uuid4().hex}"

    def expand(self, events: Any) -> Any:
        shards = self._shards
        return (
            events
            # A typed keying step: Prism needs a KV coder in front of a stateful stage.
            | "KeyByShard"
            >> beam.Map(lambda e: (shard_of(e.content_key, shards), e)).with_output_types(
                tuple[str, Any]
            )
            | "ReleaseOnWatermark"
            >> beam.ParDo(ReleaseLifecyclesFn(self._policy, self.stage_id, self._horizon))
        )

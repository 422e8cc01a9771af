"""The streaming shell of the lifecycle function: keyed state and event-time timers.

Per content key, every event is kept in state. An event-time timer releases what the
watermark has made final: when it fires at time W, the same `content_lifecycle` the batch
path calls is evaluated over all events so far, and each request whose history up to W
changed is emitted with the transitions at or before W. So BREACHED (at deadline + 1 ms)
comes out once the watermark passes the deadline and not before, and an action after the
deadline later turns it into RESOLVED_LATE. At the final watermark every transition is
released, which is exactly the batch path's result.

Runners: this needs a runner that honours event-time timers (Prism; see docker/prism/).
Beam's FnApiRunner fires them early.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.utils.timestamp import Timestamp

from pipelines.lifecycle import content_lifecycle
from pipelines.model import EPOCH, ActionEvent, RequestEvent, RequestLifecycle, epoch_micros
from pipelines.policy import SlaPolicy


def to_timestamp(t: datetime) -> Timestamp:
    return Timestamp(micros=epoch_micros(t))


def from_timestamp(ts: Timestamp) -> datetime:
    return EPOCH + timedelta(microseconds=ts.micros)


@dataclasses.dataclass(frozen=True)
class ReleasedLifecycle:
    """A request's history as final up to `watermark`; `revision` counts the releases of
    this request (a late event can change what was released at the same watermark), so
    the highest revision is the current one."""

    lifecycle: RequestLifecycle
    watermark: datetime
    revision: int


class ReleaseLifecyclesFn(beam.DoFn):  # type: ignore[misc]
    """(content key, event) -> ReleasedLifecycle whenever a request's final history grows."""

    EVENTS = BagStateSpec("events", PickleCoder())
    # request_id -> (revision, signature of the released transitions)
    EMITTED = ReadModifyWriteStateSpec("emitted", PickleCoder())
    NEXT = ReadModifyWriteStateSpec("next", PickleCoder())  # micros of the armed timer
    HORIZON = ReadModifyWriteStateSpec("horizon", PickleCoder())  # micros released up to
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)

    def __init__(self, policy: SlaPolicy) -> None:
        self._policy = policy

    def process(
        self,
        element: tuple[str, RequestEvent | ActionEvent],
        events: Any = beam.DoFn.StateParam(EVENTS),
        emitted_state: Any = beam.DoFn.StateParam(EMITTED),
        armed: Any = beam.DoFn.StateParam(NEXT),
        horizon: Any = beam.DoFn.StateParam(HORIZON),
        release: Any = beam.DoFn.TimerParam(RELEASE),
    ) -> Iterator[ReleasedLifecycle]:
        _, event = element
        events.add(event)
        at = to_timestamp(event.event_time)
        released = horizon.read()
        if released is not None and at.micros <= released:
            # A late event, behind what was already released: correct the released past
            # now, up to the same horizon (the watermark is at least there). No timer is
            # armed behind the watermark: runners may not fire those.
            yield from self._release(released, events, emitted_state, armed, release)
        else:
            self._arm(at, armed, release)

    @staticmethod
    def _arm(at: Timestamp, armed: Any, release: Any) -> None:
        # One timer per key: keep it at the earliest moment something may become final.
        current = armed.read()
        if current is None or at.micros < current:
            release.set(at)
            armed.write(at.micros)

    @on_timer(RELEASE)  # type: ignore[untyped-decorator]
    def on_release(
        self,
        fired: Any = beam.DoFn.TimestampParam,
        events: Any = beam.DoFn.StateParam(EVENTS),
        emitted_state: Any = beam.DoFn.StateParam(EMITTED),
        armed: Any = beam.DoFn.StateParam(NEXT),
        horizon: Any = beam.DoFn.StateParam(HORIZON),
        release: Any = beam.DoFn.TimerParam(RELEASE),
    ) -> Iterator[ReleasedLifecycle]:
        armed.clear()
        released = max(fired.micros, horizon.read() or fired.micros)
        horizon.write(released)
        yield from self._release(released, events, emitted_state, armed, release)

    def _release(
        self, up_to: int, events: Any, emitted_state: Any, armed: Any, release: Any
    ) -> Iterator[ReleasedLifecycle]:
        """Emit every request whose history up to `up_to` (micros) differs from what was
        released; arm the timer for the next transition beyond it."""
        watermark = from_timestamp(Timestamp(micros=up_to))
        all_events = list(events.read())
        requests = [e for e in all_events if isinstance(e, RequestEvent)]
        actions = [e for e in all_events if isinstance(e, ActionEvent)]
        emitted: dict[str, tuple[int, tuple[Any, ...]]] = emitted_state.read() or {}
        pending: list[datetime] = []
        for lc in content_lifecycle(requests, actions, self._policy):
            final = tuple(t for t in lc.transitions if t.at <= watermark)
            pending += [t.at for t in lc.transitions if t.at > watermark]
            signature = tuple((t.transition, t.at, t.disposition) for t in final)
            revision, released = emitted.get(lc.request.request_id, (0, ()))
            if final and released != signature:
                emitted[lc.request.request_id] = (revision + 1, signature)
                yield ReleasedLifecycle(
                    dataclasses.replace(lc, transitions=final), watermark, revision + 1
                )
        emitted_state.write(emitted)
        if pending:
            self._arm(to_timestamp(min(pending)), armed, release)


class ReleaseLifecycles(beam.PTransform):  # type: ignore[misc]
    """Timestamped events -> ReleasedLifecycle, on the watermark (streaming path)."""

    def __init__(self, policy: SlaPolicy) -> None:
        super().__init__()
        self._policy = policy

    def expand(self, events: Any) -> Any:
        return (
            events
            # A typed keying step: Prism needs a KV coder in front of a stateful stage.
            | "KeyByContent"
            >> beam.Map(lambda e: (f"{e.platform}/{e.content_id}", e)).with_output_types(
                tuple[str, Any]
            )
            | "ReleaseOnWatermark" >> beam.ParDo(ReleaseLifecyclesFn(self._policy))
        )

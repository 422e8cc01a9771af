"""The release logic of the streaming path without a runner: what a timer firing at W
releases, what a late event corrects at once, and where a restarted job starts."""

from __future__ import annotations

from datetime import timedelta

from pipelines.model import epoch_micros
from pipelines.policy import SlaPolicy
from pipelines.streaming_lifecycle import LifecycleReleaser, ReleasedLifecycle
from tests.conftest import T0, action, request

H = timedelta(hours=1)
MS = timedelta(milliseconds=1)
DEADLINE = T0 + 24 * H  # RU suicide promotion: 24 h


def _steps(releases: list[ReleasedLifecycle]) -> list[tuple[str, tuple[str, ...]]]:
    return [
        (r.lifecycle.request.request_id, tuple(t.transition.value for t in r.lifecycle.transitions))
        for r in releases
    ]


def test_timers_release_on_the_watermark_and_late_events_at_once() -> None:
    releaser = LifecycleReleaser(SlaPolicy.load())
    releases, arms = releaser.add(request(1))
    assert releases == [] and arms == [epoch_micros(T0)]  # nothing before the watermark

    releases, arms = releaser.fire(epoch_micros(T0))
    assert _steps(releases) == [("R1", ("OPENED",))]
    assert arms == [epoch_micros(DEADLINE + MS)]  # the breach, when the watermark gets there

    releases, _ = releaser.fire(epoch_micros(DEADLINE + MS))
    assert _steps(releases) == [("R1", ("OPENED", "BREACHED"))]
    assert releases[0].revision == 2

    # An action behind the released horizon: corrected at once, no timer behind the watermark.
    releases, arms = releaser.add(action(1, hours=20))
    assert _steps(releases) == [("R1", ("OPENED", "RESOLVED"))] and arms == []
    assert releases[0].watermark == DEADLINE + MS

    # An action ahead of it waits for its timer.
    releases, arms = releaser.add(action(2, content="c2", hours=30))
    assert releases == [] and arms == [epoch_micros(T0 + 30 * H)]


def test_a_restarted_job_releases_rebuilt_histories_at_the_previous_horizon() -> None:
    # The previous run released up to 30 h; the rebuilt events come in again, plus an
    # action it had read but not landed. Everything up to 30 h comes out at once, complete.
    horizon = T0 + 30 * H
    releaser = LifecycleReleaser(SlaPolicy.load(), epoch_micros(horizon))
    first, _ = releaser.add(request(1))
    assert _steps(first) == [("R1", ("OPENED", "BREACHED"))]
    late, arms = releaser.add(action(1, hours=26))
    assert _steps(late) == [("R1", ("OPENED", "BREACHED", "RESOLVED_LATE"))]
    assert {r.watermark for r in first + late} == {horizon} and arms == []

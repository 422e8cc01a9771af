"""join_patiently waits for the thread to end, however long, and says so meanwhile."""

from __future__ import annotations

import logging
import threading

import pytest

from connectors.threads import join_patiently


def test_waits_until_the_thread_ends_and_warns_while_waiting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name="lander", daemon=True)
    thread.start()
    threading.Timer(0.3, release.set).start()
    with caplog.at_level(logging.WARNING, logger="connectors.threads"):
        join_patiently(thread, "landing", warn_every_s=0.05)
    assert not thread.is_alive()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) >= 2
    assert all("lander" in w and "landing" in w for w in warnings)


def test_an_ended_thread_returns_at_once_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    with caplog.at_level(logging.WARNING, logger="connectors.threads"):
        join_patiently(thread, "nothing", warn_every_s=10.0)
    assert caplog.records == []

"""The short chaos run of `make test` (the long one is `make chaos`): a steady stream of emails while
the sender, the events and the webhooks services are killed -9 in turn and NATS is restarted. Every
accepted email is delivered and sent to SES once (bar the documented in-doubt window), and its
`email.delivered` webhook arrives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from chaos import Report, chaos_stack, run, short_schedule
from mailroom_devstack.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with chaos_stack(Path(tmp_path_factory.mktemp("chaos"))) as s:
        yield s


def test_a_short_chaos_run_loses_nothing_and_sends_nothing_twice(stack: Stack) -> None:
    report: Report = run(stack, short_schedule(), seconds=24, rate=10)
    print("\n".join(report.lines()))
    assert report.faults == ["kill -9 sender", "kill -9 events", "kill -9 webhooks", "restart NATS"]
    assert report.accepted >= 100, report.lines()  # the stream really ran through the faults
    assert report.lost == [], report.lines()
    assert report.duplicates == {}, report.lines()
    assert report.webhooks_missing == [], report.lines()
    assert report.ok

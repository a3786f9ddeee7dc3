import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailroom_devstack.infra import Postgres
from mailroom_devstack.stack import SERVICES, Stack

sys.path.insert(0, str(Path(__file__).parent))

from support import make_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[Stack]:
    # Gauges (outbox backlog, consumer lag) read every second, so tests/test_metrics.py sees them move.
    every_second = {"MAILROOM_METRICS_INTERVAL_SECONDS": "1"}
    yield from make_stack(tmp_path_factory.mktemp("stack"), postgres, **{svc: every_second for svc in SERVICES})

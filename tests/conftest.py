import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailroom_devstack.infra import Postgres
from mailroom_devstack.stack import Stack

sys.path.insert(0, str(Path(__file__).parent))

from support import make_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[Stack]:
    yield from make_stack(tmp_path_factory.mktemp("stack"), postgres)

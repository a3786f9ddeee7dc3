import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from mailroom_devstack.infra import Postgres
from mailroom_devstack.stack import Ports, Stack

sys.path.insert(0, str(Path(__file__).parent))


def make_stack(tmp: Path, postgres: Postgres, **extra_env: dict[str, str]) -> Iterator[Stack]:
    dbname = f"mailroom_e2e_{secrets.token_hex(5)}"
    url = postgres.create_database(dbname)
    stack = Stack(base_dir=tmp, ports=Ports.free(), operator_token=f"op_{secrets.token_hex(12)}",
                  webhooks_secret_key=Fernet.generate_key().decode(), database_url=url, extra_env=extra_env)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        postgres.drop_database(dbname)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[Stack]:
    yield from make_stack(tmp_path_factory.mktemp("stack"), postgres)

"""tools/boundaries.py run as `make lint` runs it, on tiny checkouts built in tmp_path."""

import subprocess
import sys
from pathlib import Path

BOUNDARIES = Path(__file__).resolve().parents[1] / "tools" / "boundaries.py"

ALPHA_SERVICE = '''"""Alpha's logic. Prose about SQL is fine here:

SELECT the due rows FROM the outbox, then UPDATE deliveries SET nothing.
"""

import structlog
from mailroom_beta import thing

from mailroom_alpha import repository

log = structlog.get_logger()

CLAIM = """
    SELECT id FROM deliveries WHERE due
"""


def describe(name: str) -> str:
    """INSERT INTO a sentence: still a docstring."""
    log.info("Select a domain from the list, then update it")
    log.info("delivery deleted", reason="DELETE requested by the tenant")
    return f"Update {name} settings from the dashboard"


async def purge(conn, schema: str) -> None:
    await conn.execute(f"DELETE FROM {schema}.outbox WHERE id = %s", (1,))
    await conn.execute("SELECT 1")
    await repository.purge(conn, thing)
'''

ALPHA_REPOSITORY = '''"""Every SQL statement of alpha."""


async def purge(conn, thing) -> None:
    await conn.execute("DELETE FROM outbox WHERE id = %s", (thing,))
    await conn.execute(f"LISTEN {thing}")
'''

KIT_OUTBOX = '''"""The kit's outbox: infrastructure, allowed its own SQL."""


async def add(conn) -> None:
    await conn.execute("INSERT INTO outbox (event_id) VALUES (%s)", ("evt_1",))
'''

KIT_CONSUMER = '''"""Not on the infrastructure list: SQL here is a violation."""

from psycopg import sql

DROP = "DROP TABLE inbox"


async def forget(conn, schema: str) -> None:
    await conn.execute(sql.SQL("TRUNCATE {}.inbox").format(sql.Identifier(schema)))
'''


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def checkout(root: Path) -> Path:
    """Two services, the kit and one tool; alpha and the kit break the rules."""
    write(root, "services/alpha/src/mailroom_alpha/__init__.py", "")
    write(root, "services/alpha/src/mailroom_alpha/service.py", ALPHA_SERVICE)
    write(root, "services/alpha/src/mailroom_alpha/repository.py", ALPHA_REPOSITORY)
    write(root, "services/alpha/migrations/0001_init.sql", "CREATE TABLE deliveries (id text PRIMARY KEY);\n")
    # Tests are outside the rules: they may import anything and poke at tables.
    write(
        root,
        "services/alpha/tests/test_alpha.py",
        'from mailroom_beta import thing\n\nQ = "SELECT * FROM deliveries"\n',
    )
    write(root, "services/beta/src/mailroom_beta/__init__.py", "thing = 1\n")
    write(root, "libs/kit/src/mailroom_kit/__init__.py", "")
    write(root, "libs/kit/src/mailroom_kit/outbox.py", KIT_OUTBOX)
    write(root, "libs/kit/src/mailroom_kit/consumer.py", KIT_CONSUMER)
    write(root, "tools/devstack/src/mailroom_devstack/__init__.py", 'Q = "SELECT 1 FROM pg_database"\n')
    return root


def run(root: Path) -> tuple[int, list[str]]:
    done = subprocess.run([sys.executable, str(BOUNDARIES), str(root)], capture_output=True, text=True, check=False)
    assert done.stderr == ""
    return done.returncode, done.stdout.splitlines()


def test_reports_each_broken_rule_with_file_and_line(tmp_path: Path) -> None:
    code, lines = run(checkout(tmp_path))

    alpha = "services/alpha/src/mailroom_alpha/service.py"
    consumer = "libs/kit/src/mailroom_kit/consumer.py"
    to_service, to_lib = (
        f"outside repository.py; move it into the {kind}'s repository.py" for kind in ("service", "lib")
    )
    assert code == 1
    assert lines == [
        "import boundaries: 2 services, 1 libs, 1 tools checked; 1 broken",
        f"  - {alpha}:7: imports mailroom_beta (another service; talk through a NATS subject instead)",
        "SQL placement: 7 modules checked (repository.py and 7 kit infrastructure modules may hold SQL); 5 broken",
        f"  - {alpha}:13: SQL statement (SELECT … FROM) {to_service}",
        f"  - {alpha}:26: SQL passed to .execute() {to_service}",
        f"  - {alpha}:27: SQL passed to .execute() {to_service}",
        f"  - {consumer}:5: SQL statement (DROP) {to_lib}",
        f"  - {consumer}:9: SQL passed to .execute() {to_lib}",
    ]


def test_a_checkout_that_keeps_the_rules_passes(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    (root / "services/alpha/src/mailroom_alpha/service.py").write_text(
        '"""SELECT … FROM in prose only."""\n\nfrom mailroom_alpha import repository\n\nNAME = repository.__name__\n'
    )
    (root / "libs/kit/src/mailroom_kit/consumer.py").unlink()

    code, lines = run(root)

    assert code == 0
    assert lines == [
        "import boundaries: 2 services, 1 libs, 1 tools checked; 0 broken",
        "SQL placement: 6 modules checked (repository.py and 7 kit infrastructure modules may hold SQL); 0 broken",
    ]


def test_libs_never_import_services_and_production_code_never_imports_tools(tmp_path: Path) -> None:
    write(tmp_path, "services/alpha/src/mailroom_alpha/__init__.py", "import mailroom_devstack.infra\n")
    write(tmp_path, "libs/kit/src/mailroom_kit/__init__.py", '"""Kit."""\n\nfrom mailroom_alpha import x\n')
    write(tmp_path, "tools/devstack/src/mailroom_devstack/__init__.py", "import mailroom_alpha\n")

    code, lines = run(tmp_path)

    assert code == 1
    assert lines == [
        "import boundaries: 1 services, 1 libs, 1 tools checked; 2 broken",
        "  - services/alpha/src/mailroom_alpha/__init__.py:1: imports mailroom_devstack"
        " (a dev tool under tools/devstack); production code must not",
        "  - libs/kit/src/mailroom_kit/__init__.py:3: imports mailroom_alpha (a service; libs never know services)",
        "SQL placement: 2 modules checked (repository.py and 7 kit infrastructure modules may hold SQL); 0 broken",
    ]

"""`python -m mailroom_domains run|migrate`, also installed as the `mailroom-domains` console script."""

from mailroom_kit.runtime import main

from mailroom_domains.app import MIGRATIONS, NAME, run
from mailroom_domains.service import SCHEMA
from mailroom_domains.settings import DomainsSettings


def entrypoint() -> None:
    main(name=NAME, schema=SCHEMA, settings_cls=DomainsSettings, migrations_dir=MIGRATIONS, run=run)  # type: ignore[arg-type]


if __name__ == "__main__":
    entrypoint()

"""`python -m mailroom_api run|migrate`, also installed as the `mailroom-api` console script."""

from mailroom_kit.runtime import main

from mailroom_api.app import MIGRATIONS, NAME, SCHEMA, run
from mailroom_api.settings import ApiSettings


def entrypoint() -> None:
    main(name=NAME, schema=SCHEMA, settings_cls=ApiSettings, migrations_dir=MIGRATIONS, run=run)


if __name__ == "__main__":
    entrypoint()

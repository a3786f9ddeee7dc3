"""`python -m mailroom_sender run|migrate`, also installed as the `mailroom-sender` console script."""

from mailroom_kit.runtime import main

from mailroom_sender.app import MIGRATIONS, NAME, run
from mailroom_sender.service import SCHEMA
from mailroom_sender.settings import SenderSettings


def entrypoint() -> None:
    main(name=NAME, schema=SCHEMA, settings_cls=SenderSettings, migrations_dir=MIGRATIONS, run=run)


if __name__ == "__main__":
    entrypoint()

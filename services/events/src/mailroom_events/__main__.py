"""`python -m mailroom_events run|migrate`, also installed as the `mailroom-events` console script."""

from mailroom_kit.runtime import main

from mailroom_events.app import MIGRATIONS, run
from mailroom_events.settings import EventsSettings


def entrypoint() -> None:
    main(name="events", schema="events", settings_cls=EventsSettings, migrations_dir=MIGRATIONS, run=run)


if __name__ == "__main__":
    entrypoint()

"""`python -m mailroom_events run|migrate|unmatched`, also installed as the `mailroom-events` console script."""

import sys

from mailroom_kit.runtime import main

from mailroom_events.app import MIGRATIONS, run
from mailroom_events.settings import EventsSettings


def entrypoint() -> None:
    if sys.argv[1:2] == ["unmatched"]:  # the operator's look at unmatched SES events (cli.py)
        from mailroom_events import cli

        sys.exit(cli.main(sys.argv[2:]))
    main(name="events", schema="events", settings_cls=EventsSettings, migrations_dir=MIGRATIONS, run=run)


if __name__ == "__main__":
    entrypoint()

from mailroom_kit.runtime import main

from mailroom_events.app import MIGRATIONS, run
from mailroom_events.settings import EventsSettings

main(name="events", schema="events", settings_cls=EventsSettings, migrations_dir=MIGRATIONS, run=run)

"""`python -m mailroom_webhooks run|migrate`."""

from mailroom_kit.runtime import main

from mailroom_webhooks.app import MIGRATIONS, NAME, SCHEMA, run
from mailroom_webhooks.settings import WebhooksSettings

if __name__ == "__main__":
    main(name=NAME, schema=SCHEMA, settings_cls=WebhooksSettings, migrations_dir=MIGRATIONS, run=run)

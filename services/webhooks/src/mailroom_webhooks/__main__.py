"""`python -m mailroom_webhooks run|migrate`, also installed as the `mailroom-webhooks` console script."""

from mailroom_kit.runtime import main

from mailroom_webhooks.app import MIGRATIONS, NAME, SCHEMA, run
from mailroom_webhooks.settings import WebhooksSettings


def entrypoint() -> None:
    main(name=NAME, schema=SCHEMA, settings_cls=WebhooksSettings, migrations_dir=MIGRATIONS, run=run)


if __name__ == "__main__":
    entrypoint()

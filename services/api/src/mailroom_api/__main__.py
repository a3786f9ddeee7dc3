from mailroom_kit.runtime import main

from mailroom_api.app import MIGRATIONS, NAME, SCHEMA, run
from mailroom_api.settings import ApiSettings

main(name=NAME, schema=SCHEMA, settings_cls=ApiSettings, migrations_dir=MIGRATIONS, run=run)

pytest_plugins = ["mailroom_devstack.pytest_plugin"]

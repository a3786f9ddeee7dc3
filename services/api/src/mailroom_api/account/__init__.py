"""The tenant's own settings (`/v1/settings`): the default sender."""

"""The suppression list API (`/v1/suppressions`): a tenant's addresses not to send to, per mode."""

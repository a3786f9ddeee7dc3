"""Authentication: tenant API keys (looked up by hash on every request) and the operator token."""

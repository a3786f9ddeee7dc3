"""API keys: created (token shown once), listed (prefix + last 4), revoked."""

"""Limits (issue 23): the per-tenant rate limit (shared token buckets, leased per process), the
monthly quota's month arithmetic and its error, and `GET /v1/usage`."""

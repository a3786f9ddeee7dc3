"""Mailroom's REST API service: tenants, API keys, accepting emails (transactional outbox), and the
read models tenants query (the email log and their domains), projected from lifecycle events."""

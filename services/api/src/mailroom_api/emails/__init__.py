"""Emails: accepting one (validated, written with its EmailQueued event in one transaction), the
email log tenants read, and the projector that keeps that log from lifecycle events."""

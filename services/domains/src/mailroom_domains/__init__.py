"""Mailroom domains service: owns tenants' sending domains (schema `domains`), creates their SES
identities with Easy DKIM and a custom MAIL FROM, and verifies them periodically."""

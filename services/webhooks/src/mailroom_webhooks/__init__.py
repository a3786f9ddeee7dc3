"""Mailroom webhooks: tenant webhook endpoints and signed (Standard Webhooks) delivery of
lifecycle events, with retries, an attempt log and an SSRF guard."""

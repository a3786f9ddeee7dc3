"""Webhook endpoints: owned by the webhooks service; the API proxies them over request/reply."""

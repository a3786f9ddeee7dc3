"""Tenants (operator API): create, list, read and update status, quota and rate limit."""

"""Domains: created by the domains service over request/reply; the tenant's read model is kept
from the reply and from domain events (the projector)."""

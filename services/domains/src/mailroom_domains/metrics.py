"""The domains service's Prometheus metrics (exposed on /metrics next to the kit's)."""

from prometheus_client import Counter

DOMAIN_CHECKS = Counter("mailroom_domain_checks_total", "Domain verification checks", ["outcome"])
DOMAINS_CREATED = Counter("mailroom_domains_create_total", "Create-domain requests", ["outcome"])

-- issue 23: the sender's queue claims due emails round-robin over tenants (repository.claim_queued:
-- each email's turn among its tenant's due emails). This index serves the per-tenant order.
CREATE INDEX deliveries_queued_by_tenant ON deliveries (tenant_id, next_attempt_at) WHERE queued_event IS NOT NULL;

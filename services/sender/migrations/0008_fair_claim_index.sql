-- issue 23: the fair claim (repository.claim_queued) visits each tenant with queued emails (a skip
-- scan over tenant_id) and reads that tenant's first due emails in its turn order (next_attempt_at,
-- email_id). This index serves both as an index-only range already in that order (no sort, no heap
-- read for `state`); it replaces 0006's (tenant_id, next_attempt_at), its prefix.
CREATE INDEX deliveries_queued_turn ON deliveries (tenant_id, next_attempt_at, email_id) INCLUDE (state)
    WHERE queued_event IS NOT NULL;
DROP INDEX deliveries_queued_by_tenant;

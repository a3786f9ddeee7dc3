-- issue 23: the sender's own tenant read model, fed by mailroom.tenant.updated (never the api
-- schema). One row per tenant that ever changed status; a tenant without a row is active. The
-- event carries the whole state: the row keeps the one with the latest updated_at.
CREATE TABLE tenants (
    tenant_id      text PRIMARY KEY,
    status         text NOT NULL CHECK (status IN ('active', 'paused', 'blocked')),
    status_reason  text,
    updated_at     timestamptz NOT NULL
);

-- A paused tenant's emails are HELD: neither sent nor failed. The EmailQueued message was acked,
-- so the row keeps the event itself (`queued_event`, the contract's JSON) and the sender's own
-- queue (sender/held.py) sends it once the tenant is active again, retrying on its own schedule
-- (`next_attempt_at`) until it is settled. `queued_event IS NOT NULL` = the queue owns the email,
-- not the JetStream message; it is cleared when the email is settled.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check
    CHECK (state IN ('pending', 'held', 'sending', 'sent', 'failed'));
ALTER TABLE deliveries ADD COLUMN queued_event bytea;
ALTER TABLE deliveries ADD COLUMN next_attempt_at timestamptz;

CREATE INDEX deliveries_queued ON deliveries (next_attempt_at) WHERE queued_event IS NOT NULL;
CREATE INDEX deliveries_held_by_tenant ON deliveries (tenant_id) WHERE state = 'held';

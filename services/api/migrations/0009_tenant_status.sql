-- Why a tenant is paused or blocked (operator's note, or the reputation guard's figures) and
-- since when it is paused; every status change also publishes tenant.updated through the outbox.
ALTER TABLE tenants
    ADD COLUMN status_reason text,
    ADD COLUMN paused_at timestamptz;

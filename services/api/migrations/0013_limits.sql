-- Issue 23: rate limits, monthly quota and trials.
--
-- The operator's burst for the tenant's rate limit (NULL: the rate itself, one second's worth) and
-- the end of its trial (NULL: no trial; once passed, sends are 402 trial_expired).
ALTER TABLE tenants
    ADD COLUMN rate_burst integer CHECK (rate_burst IS NULL OR rate_burst >= 1),
    ADD COLUMN trial_ends_at timestamptz;

-- Live recipients accepted per tenant and UTC calendar month, counted by the accept statement itself
-- (the same autocommit statement that writes the emails: a crash loses no count, a replayed
-- Idempotency-Key never reaches it). The monthly quota is enforced by the conditional upsert on this
-- row (ON CONFLICT DO UPDATE ... WHERE sees the latest committed count, across every replica).
-- No foreign key: tenants are never deleted, and a FK check would add a lock per send.
CREATE TABLE tenant_usage (
    tenant_id   text NOT NULL,
    month       date NOT NULL,          -- the first day of the UTC month
    recipients  bigint NOT NULL CHECK (recipients >= 0),
    PRIMARY KEY (tenant_id, month)
);

-- The shared token buckets of the rate limiter (limits/): one row per tenant, taken from in leases
-- by every API process. UNLOGGED: a take writes no WAL, so its autocommit statement commits without
-- a WAL flush and holds the row lock for microseconds; after a crash the buckets start full again,
-- which only forgives the second before it.
CREATE UNLOGGED TABLE rate_buckets (
    tenant_id    text PRIMARY KEY,
    tokens       double precision NOT NULL,   -- may go below 0: a batch larger than what is left pays later
    refilled_at  timestamptz NOT NULL,
    granted      integer NOT NULL DEFAULT 0   -- what the last take granted (read back by that take)
);

-- Raised by the accept statements when the emails they wrote would take the month's count past the
-- quota: the whole statement (emails, outbox rows, Idempotency-Key record) is rolled back.
CREATE FUNCTION quota_refused() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'monthly quota exceeded' USING ERRCODE = 'MRQ01';
END
$$;

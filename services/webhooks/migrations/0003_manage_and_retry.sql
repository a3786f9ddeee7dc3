-- Issue 19: manage, rotate, test, see every delivery, retry for days, disable after failing.

-- Secret rotation: the secret before the last rotation keeps signing (a second signature in
-- webhook-signature) until previous_secret_expires_at, so receivers can switch without a gap.
-- failing_since: start of the current run of failed attempts (NULL after any success); an
-- endpoint failing continuously for MAILROOM_WEBHOOKS_DISABLE_AFTER_FAILING_DAYS is disabled.
ALTER TABLE endpoints
    ADD COLUMN previous_secret_encrypted  text,
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD COLUMN disabled_at                timestamptz,
    ADD COLUMN failing_since              timestamptz;

-- What the endpoint answered (≤ 4 KiB, decoded as UTF-8 with replacement, NUL removed), and
-- whether the attempt was asked for by the tenant (POST …/deliveries/{id}/retry).
ALTER TABLE delivery_attempts
    ADD COLUMN response_body text,
    ADD COLUMN manual        boolean NOT NULL DEFAULT false;

-- The next claim of a delivery a tenant asked to retry is marked manual on its attempt row.
ALTER TABLE deliveries
    ADD COLUMN manual_retry boolean NOT NULL DEFAULT false;

-- The tenant's delivery log: newest first per endpoint, keyset-paginated by id.
CREATE INDEX deliveries_endpoint_id ON deliveries (endpoint_id, id DESC);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, attempt);

-- Things the tenant is told about an endpoint (SPEC: "a webhook.disabled record in the API"):
-- type `webhook.disabled` with the reason (`gone`: it answered 410; `failing`: it failed
-- continuously for the configured window).
CREATE TABLE endpoint_notices (
    id          bigserial PRIMARY KEY,
    endpoint_id text NOT NULL REFERENCES endpoints (id),
    type        text NOT NULL,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX endpoint_notices_endpoint ON endpoint_notices (endpoint_id, id DESC);

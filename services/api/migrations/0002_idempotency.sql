-- Idempotency-Key records of POST /v1/emails and POST /v1/emails/batch. A record is written by the
-- very statement that writes the email(s) it answered for, so there is never a key without its
-- emails or accepted emails without their key; a refused request (4xx) writes none.
CREATE TABLE idempotency_keys (
    tenant_id    text NOT NULL,
    mode         text NOT NULL CHECK (mode IN ('live', 'test')),  -- a test key's record never answers a live key
    key          text NOT NULL,                     -- the header as given: 1..256 visible ASCII characters
    endpoint     text NOT NULL,                     -- e.g. 'POST /v1/emails'; with the hash, the fingerprint
    body_sha256  bytea NOT NULL,                    -- SHA-256 of the request body as received
    status_code  integer NOT NULL,                  -- the original answer, replayed as it was
    response     bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,              -- never replayed from then on; purged by the api worker
    PRIMARY KEY (tenant_id, mode, key)
);
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at);

-- Issue 22: stats rollups, maintained by the email log projector in
-- the transaction that records the events it counts (emails/projector.py): an event is counted
-- when its timeline entry is first written, so a redelivered event counts nothing.

-- Counts per tenant, mode, UTC hour, sending domain and tag. `tag` is '' on the rows that count
-- every email, else "name:value" of one of the email's tags (an email with two tags adds to three
-- rows per domain), so `GET /v1/stats` reads the rows of one tag value and never scans the log.
-- Counts are of recipients (sent, delivered, delivery_delayed, bounced_*, complained,
-- suppressed, unsubscribed), of events (opened, clicked) and of emails (failed, opened_unique,
-- clicked_unique: its first open / click).
CREATE TABLE stats_hourly (
    tenant_id         text NOT NULL,
    mode              text NOT NULL CHECK (mode IN ('live', 'test')),
    tag               text NOT NULL,
    hour              timestamptz NOT NULL,
    domain            text NOT NULL,        -- lower-case from_domain
    sent              bigint NOT NULL DEFAULT 0,
    delivered         bigint NOT NULL DEFAULT 0,
    delivery_delayed  bigint NOT NULL DEFAULT 0,
    bounced_hard      bigint NOT NULL DEFAULT 0,
    bounced_soft      bigint NOT NULL DEFAULT 0,
    complained        bigint NOT NULL DEFAULT 0,
    opened            bigint NOT NULL DEFAULT 0,
    opened_unique     bigint NOT NULL DEFAULT 0,
    clicked           bigint NOT NULL DEFAULT 0,
    clicked_unique    bigint NOT NULL DEFAULT 0,
    failed            bigint NOT NULL DEFAULT 0,
    suppressed        bigint NOT NULL DEFAULT 0,
    unsubscribed      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, mode, tag, hour, domain)
);

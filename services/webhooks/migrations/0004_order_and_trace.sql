-- Per-email ordering (issue 19) and a durable trace (issue 20) for deliveries.

-- order_key: what a delivery is ordered with at its endpoint, the email id (`msg_…`) of an email
-- event or the domain id (`dom_…`) of a domain event; NULL (no order: webhook.test, rows from
-- before this migration). seq: the order the webhooks service recorded the deliveries in. A
-- delivery is claimed only when no delivery with the same endpoint and order_key and a lower seq
-- is still pending or in flight, so one endpoint gets the events of one email one at a time, in
-- order; other emails and other endpoints are not held up. Existing rows keep seq NULL (no
-- rewrite of the table): they have no order_key either.
CREATE SEQUENCE deliveries_seq;
ALTER TABLE deliveries
    ADD COLUMN order_key text,
    ADD COLUMN seq bigint,
    -- W3C trace context (JSON of `traceparent`/`tracestate`) of the span that fanned the event out,
    -- as the kit's outbox rows carry it (kit migration 0004): the POST span of every attempt,
    -- however late and from whichever replica, continues the email's trace. NULL when tracing is off.
    ADD COLUMN trace_context text;
ALTER TABLE deliveries ALTER COLUMN seq SET DEFAULT nextval('deliveries_seq');
ALTER SEQUENCE deliveries_seq OWNED BY deliveries.seq;

-- "Is an earlier delivery of this email still open at this endpoint?" (the claim's check).
CREATE INDEX deliveries_open_in_order ON deliveries (endpoint_id, order_key, seq)
    WHERE status IN ('pending', 'in_flight') AND order_key IS NOT NULL;

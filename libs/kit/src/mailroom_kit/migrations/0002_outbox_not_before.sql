-- Scheduled outbox rows: events to publish no earlier than `not_before` (a scheduled email's
-- EmailQueued). A table of their own, so the immediate outbox keeps exactly its insert and
-- relay cost (no extra index to maintain, no filter in its window query), and so what waits for
-- its time is never counted as relay backlog. The relay takes due rows with the same
-- FOR UPDATE SKIP LOCKED as the immediate ones; the owner cancels a row by deleting it and moves
-- it by updating `not_before`, both under that row lock (see mailroom_kit/outbox.py).
CREATE TABLE outbox_scheduled (
    id          bigserial PRIMARY KEY,
    event_id    text NOT NULL UNIQUE,
    subject     text NOT NULL,
    payload     bytea NOT NULL,
    not_before  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_scheduled_due_idx ON outbox_scheduled (not_before, id);

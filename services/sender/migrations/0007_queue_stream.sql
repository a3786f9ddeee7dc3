-- issue 23: the stream (transactional | broadcast) of an email the sender's queue owns, written
-- with `queued_event` (hold, defer), so the operator API's view (mailroom.rpc.sender.status) counts
-- the queue per stream without parsing every kept EmailQueued. NULL on rows held before this
-- migration: those are read from their `queued_event`.
ALTER TABLE deliveries ADD COLUMN stream text;

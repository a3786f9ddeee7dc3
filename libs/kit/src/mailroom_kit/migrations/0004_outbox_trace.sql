-- W3C trace context (JSON of the `traceparent`/`tracestate` headers) of the span that was current
-- when the row was written, sent by the relay as the message's headers so the consumer's span in
-- the next service is its child (mailroom_kit/tracing.py). NULL when tracing is off: a nullable
-- column without a default costs nothing to add or to insert.
ALTER TABLE outbox ADD COLUMN trace_context text;
ALTER TABLE outbox_scheduled ADD COLUMN trace_context text;

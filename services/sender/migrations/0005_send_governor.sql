-- issue 23: the SES send-rate governor, shared by every sender replica (sender/governor.py).
-- One row: SES's SendQuota as GetAccount last reported it, and a token bucket every live send
-- takes one token from, in one statement on the Postgres clock (so replicas never disagree on
-- time). `rate`/`capacity` are derived from max_send_rate by the replica that refreshed it.
-- Until a GetAccount answers, the SES sandbox's quota (1/s, 200/day) applies.
CREATE TABLE send_governor (
    id                  smallint PRIMARY KEY CHECK (id = 1),
    max_send_rate       float8 NOT NULL,             -- SendQuota.MaxSendRate (sends/s)
    max_24_hour_send    float8 NOT NULL,             -- SendQuota.Max24HourSend (< 0 = unlimited)
    sent_last_24_hours  float8 NOT NULL DEFAULT 0,   -- SendQuota.SentLast24Hours at refreshed_at
    sent_since_refresh  integer NOT NULL DEFAULT 0,  -- tokens granted since (all replicas)
    refreshed_at        timestamptz,
    rate                float8 NOT NULL,             -- bucket refill, tokens/s
    capacity            float8 NOT NULL,             -- bucket size (burst)
    tokens              float8 NOT NULL DEFAULT 0,
    stamp               timestamptz NOT NULL DEFAULT clock_timestamp()
);
INSERT INTO send_governor (id, max_send_rate, max_24_hour_send, rate, capacity) VALUES (1, 1, 200, 0.9, 1);

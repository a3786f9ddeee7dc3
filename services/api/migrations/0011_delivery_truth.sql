-- Delivery truth (issue 22): consecutive soft bounces per tenant, mode and address. The email log
-- projector adds each newly recorded transient bounce and deletes the row on a delivery to the
-- address (a delivery resets the count); with MAILROOM_API_SOFT_BOUNCE_SUPPRESS_AFTER = N > 0 an
-- address reaching N is suppressed (reason `bounce`) in the same statement. Only addresses that
-- soft-bounced since their last delivery have a row.
CREATE TABLE soft_bounces (
    tenant_id       text NOT NULL REFERENCES tenants (id),
    mode            text NOT NULL CHECK (mode IN ('live', 'test')),
    email           text NOT NULL CHECK (email = lower(email)),
    consecutive     integer NOT NULL CHECK (consecutive > 0),
    last_email_id   text NOT NULL,                      -- msg_… of the latest soft bounce
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, mode, email)
);

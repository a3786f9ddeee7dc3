-- Issue 21: an endpoint's delivery format. `standard`: Standard Webhooks headers (webhook-id,
-- webhook-timestamp, webhook-signature) and Mailroom's payload. `resend`: endpoints created through
-- the Resend-compatible API (/resend/webhooks) get svix-id, svix-timestamp, svix-signature (the same
-- HMAC) and Resend's payload shape, built from the stored payload at each attempt.
ALTER TABLE endpoints
    ADD COLUMN format text NOT NULL DEFAULT 'standard' CHECK (format IN ('standard', 'resend'));

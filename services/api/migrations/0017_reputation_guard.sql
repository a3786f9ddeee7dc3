-- Issue 22: the reputation guard (tenants/reputation.py). The email log projector, on a newly
-- recorded live hard bounce or complaint, reads the tenant's last N live sends (recipients handed
-- to SES) and pauses the tenant when a rate is over its threshold; it reads them through
-- emails_tenant_list_idx (tenant_id, mode, id DESC) and the recipients' primary key, no new index.
--
-- The operator's own thresholds for one tenant (NULL: the server's MAILROOM_API_REPUTATION_*):
-- rates as fractions (0.05 = 5 %), and the sends the window must hold before it can trip.
-- `reputation_since`: when the window starts (set when the tenant becomes active again after a
-- pause or block, so the bounces that paused it do not pause it again; NULL: no such start).
ALTER TABLE tenants
    ADD COLUMN reputation_bounce_rate double precision
        CHECK (reputation_bounce_rate IS NULL OR reputation_bounce_rate BETWEEN 0 AND 1),
    ADD COLUMN reputation_complaint_rate double precision
        CHECK (reputation_complaint_rate IS NULL OR reputation_complaint_rate BETWEEN 0 AND 1),
    ADD COLUMN reputation_min_sends integer
        CHECK (reputation_min_sends IS NULL OR reputation_min_sends >= 1),
    ADD COLUMN reputation_since timestamptz;

-- Issue 18: DELETE /v1/domains/{id}. A deleted domain's row goes (sends from it: 403
-- domain_not_verified, as for any name the tenant has no verified domain of) and its id is kept
-- here so a late or redelivered domain event never brings it back.
CREATE TABLE deleted_domains (
    id          text PRIMARY KEY,                   -- dom_…
    tenant_id   text NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now()
);

-- The key cache remembers tracking defaults per domain name: forget them when a domain goes too.
CREATE TRIGGER domains_tracking_deleted AFTER DELETE ON domains
    FOR EACH ROW EXECUTE FUNCTION notify_domain_tracking_changed();

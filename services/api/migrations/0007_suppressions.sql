-- Send-time suppression (issue 22). The key cache (auth/cache.py) remembers, with each key, whether
-- its tenant's list of that key's mode has any entry: a send of a tenant with an empty list then
-- costs no query for it. A tenant+mode's list becoming non-empty (its first entry) or empty (its
-- last entry removed) tells every API process to forget, in the writing transaction.
CREATE FUNCTION notify_suppressions_emptiness_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed suppressions;
BEGIN
    IF TG_OP = 'INSERT' THEN changed := NEW; ELSE changed := OLD; END IF;
    IF NOT EXISTS (
        SELECT 1 FROM suppressions
        WHERE tenant_id = changed.tenant_id AND mode = changed.mode AND email <> changed.email
    ) THEN
        PERFORM pg_notify('mailroom_api_auth', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER suppressions_emptiness_inserted AFTER INSERT ON suppressions
    FOR EACH ROW EXECUTE FUNCTION notify_suppressions_emptiness_changed();

CREATE TRIGGER suppressions_emptiness_deleted AFTER DELETE ON suppressions
    FOR EACH ROW EXECUTE FUNCTION notify_suppressions_emptiness_changed();

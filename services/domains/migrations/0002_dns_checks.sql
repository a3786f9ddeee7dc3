-- Issue 18: public-DNS checks. What DNS answered for each record at its last check (CNAME targets,
-- "priority host" for MX, each TXT record's strings joined), why it has its status, and when.
ALTER TABLE domain_records
    ADD COLUMN found           text[] NOT NULL DEFAULT '{}',
    ADD COLUMN detail          text,
    ADD COLUMN last_checked_at timestamptz;

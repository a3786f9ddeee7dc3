-- Checks are applied in the order they began. Every check takes the next `check_seq` before it asks
-- SES and DNS; `applied_check_seq` is the number of the check whose view the row holds. A check
-- whose number is not above it began before the check already applied (a lease that expired
-- mid-check, a verify request during a check) and is dropped: its older view must not move the
-- status back (a verified domain back to temporary_failure, published a second time).
ALTER TABLE domains
    ADD COLUMN check_seq         bigint NOT NULL DEFAULT 0,
    ADD COLUMN applied_check_seq bigint NOT NULL DEFAULT 0;

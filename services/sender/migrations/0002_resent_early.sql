-- An in-doubt send re-sent before in_doubt_seconds because SES Send events for later attempts
-- had arrived and its own had not: that early resend happens at most once per email.
ALTER TABLE deliveries ADD COLUMN resent_early boolean NOT NULL DEFAULT false;

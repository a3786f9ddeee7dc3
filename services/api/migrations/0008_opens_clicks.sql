-- Opens and clicks (issue 22): not statuses, but counted per email by the email-log projector, in
-- the same batch statement that moves the status (each SES Open/Click event once: its timeline
-- entry's id is the inbox key, so a redelivery adds nothing).
ALTER TABLE emails ADD COLUMN opens integer NOT NULL DEFAULT 0, ADD COLUMN clicks integer NOT NULL DEFAULT 0;

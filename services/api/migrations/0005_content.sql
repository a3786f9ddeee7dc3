-- issue 16: what was attached to each email, never the bytes: a JSON array of
-- {"filename", "size" (decoded bytes), "content_type", "content_id"} in the order sent, the
-- invite.ics an ical_event adds included. `text` now holds the text generated from html too.
ALTER TABLE emails ADD COLUMN attachments jsonb NOT NULL DEFAULT '[]';

"""Mailroom sender: consumes queued emails, builds MIME, sends through SES (or the test-mode
simulator) exactly once, and publishes `EmailSent` / `EmailFailed` through the outbox."""

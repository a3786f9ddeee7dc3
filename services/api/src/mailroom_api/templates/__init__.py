"""Templates (issue 17): versioned, typed, sandboxed, sendable by id or alias."""

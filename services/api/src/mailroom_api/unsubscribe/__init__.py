"""One-click unsubscribe (RFC 8058): the signed links of broadcast emails and `/v1/unsubscribe/{token}`."""

"""Verify-mode `dns` (SES_EMULATOR_VERIFY=dns): like SES, an identity verifies only when its Easy
DKIM CNAMEs resolve, here in the DNS server the emulator is pointed at (SES_EMULATOR_DNS_SERVER,
`host:port`, e.g. the devstack's local authoritative server), and its custom MAIL FROM only when
the MX record points at `feedback-smtp.<region>.amazonses.com`.

A status that was SUCCESS and whose records vanished becomes TEMPORARY_FAILURE, as SES reports it.
Answers are remembered for `cache_seconds` so a burst of sends does not query DNS for each.
Kept apart from the rest of the emulator: only `service.EmulatorService` calls it.
"""

from __future__ import annotations

import threading
import time

import dns.exception
import dns.resolver

from .state import Identity


def parse_server(value: str) -> tuple[str, int]:
    """`host:port` (or a bare host, port 53)."""
    host, sep, port = value.strip().rpartition(":")
    if not sep:
        return value.strip(), 53
    return host.strip("[]"), int(port)


class DnsVerifier:
    def __init__(self, server: str, *, region: str, timeout: float = 1.0, cache_seconds: float = 0.5) -> None:
        host, port = parse_server(server)
        self._resolver = dns.resolver.Resolver(configure=False)
        self._resolver.nameservers = [host]
        self._resolver.port = port
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout
        self._region = region
        self._cache_seconds = cache_seconds
        self._cache: dict[tuple[str, str], tuple[float, tuple[str, ...]]] = {}
        self._ever_verified: set[tuple[str, str]] = set()  # (identity, "dkim" | "mail_from")
        self._lock = threading.Lock()

    def _lookup(self, name: str, rdtype: str) -> tuple[str, ...]:
        key = (name.lower(), rdtype)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self._cache_seconds:
            return hit[1]
        try:
            answer = self._resolver.resolve(name, rdtype, search=False)
            if rdtype == "CNAME":
                values = tuple(r.target.to_text(omit_final_dot=True).lower() for r in answer)
            else:
                values = tuple(r.exchange.to_text(omit_final_dot=True).lower() for r in answer)
        except dns.exception.DNSException:
            values = ()
        with self._lock:
            self._cache[key] = (now, values)
        return values

    def _status(self, ident: Identity, what: str, ok: bool) -> str:
        key = (ident.name.lower(), what)
        with self._lock:
            if ok:
                self._ever_verified.add(key)
                return "SUCCESS"
            return "TEMPORARY_FAILURE" if key in self._ever_verified else "PENDING"

    def dkim_status(self, ident: Identity) -> str:
        tokens = list(ident.dkim_tokens)
        ok = bool(tokens) and all(
            f"{t}.dkim.amazonses.com" in self._lookup(f"{t}._domainkey.{ident.name}", "CNAME") for t in tokens
        )
        return self._status(ident, "dkim", ok)

    def mail_from_status(self, ident: Identity) -> str:
        assert ident.mail_from_domain
        expected = f"feedback-smtp.{self._region}.amazonses.com"
        return self._status(ident, "mail_from", expected in self._lookup(ident.mail_from_domain, "MX"))

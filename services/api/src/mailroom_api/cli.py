"""`mailroom admin …`: the operator API as a command line, working directly on the database
through the same service layer (MAILROOM_DATABASE_URL), and the dead-letter queue on NATS
(MAILROOM_NATS_URL). It never migrates: with migrations pending it says to run
`python -m mailroom_api migrate` and exits 1.

    mailroom admin tenants create --name N [--monthly-quota Q] [--rate-limit R] [--json]
    mailroom admin tenants list [--json]
    mailroom admin tenants show --tenant ten_… [--json]      (why it is paused, its reputation window)
    mailroom admin tenants update --tenant ten_… [--status active|paused|blocked [--reason R]] [--monthly-quota Q]
                                  [--rate-limit R] [--bounce-rate F|none] [--complaint-rate F|none]
                                  [--min-sends N|none] [--json]
    mailroom admin api-keys create --tenant ten_… --name N --mode live|test [--permission P] [--json]
    mailroom admin dlq list [--consumer DURABLE] [--json]
    mailroom admin dlq replay (--seq N | --all [--consumer DURABLE])
    mailroom admin sending [--json]     (SES quota, sends in 24 h, held streams and tenants: asks a sender)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import msgspec
import nats
from mailroom_kit import dlq
from mailroom_kit.db import connect
from mailroom_kit.migrations import pending
from mailroom_kit.settings import SettingsError
from nats.aio.client import Client

from mailroom_api.app import MIGRATIONS, SCHEMA
from mailroom_api.checks import parse_timestamp
from mailroom_api.errors import ApiError
from mailroom_api.keys import service as keys
from mailroom_api.keys.schemas import CreateApiKey
from mailroom_api.sending import service as sending
from mailroom_api.settings import ApiSettings
from mailroom_api.tenants import service as tenants
from mailroom_api.tenants.schemas import CreateTenant, Tenant, TenantList, UpdateTenant


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailroom", description="Mailroom operator commands")
    top = parser.add_subparsers(dest="area", required=True)
    admin = top.add_parser("admin", help="operator commands").add_subparsers(dest="resource", required=True)

    tenants = admin.add_parser("tenants", help="tenants").add_subparsers(dest="action", required=True)
    create = tenants.add_parser("create", help="create a tenant")
    create.add_argument("--name", required=True)
    create.add_argument("--monthly-quota", type=int)
    create.add_argument("--rate-limit", type=int)
    create.add_argument("--rate-burst", type=int, help="the rate limit's burst (default: the rate)")
    create.add_argument("--trial-ends-at", help="RFC 3339 (e.g. 2027-01-31T00:00:00Z): then sends are 402")
    create.add_argument("--json", action="store_true", help="print the tenant as JSON")
    listing = tenants.add_parser("list", help="list tenants")
    listing.add_argument("--json", action="store_true")
    update = tenants.add_parser("update", help="change a tenant's status, quota or rate limit")
    update.add_argument("--tenant", required=True)
    update.add_argument("--name")
    update.add_argument("--status", choices=["active", "paused", "blocked"])
    update.add_argument("--reason", help="why the status changes (with --status)")
    update.add_argument("--monthly-quota", type=int)
    update.add_argument("--rate-limit", type=int)
    update.add_argument("--rate-burst", type=int)
    update.add_argument("--trial-ends-at", help="RFC 3339 timestamp, or `none` to end the trial's limit")
    # Issue 22: the reputation guard's thresholds for this tenant (fractions; `none`: the server's).
    update.add_argument("--bounce-rate", help="hard-bounce rate that pauses it, e.g. 0.05, or `none`")
    update.add_argument("--complaint-rate", help="complaint rate that pauses it, e.g. 0.001, or `none`")
    update.add_argument("--min-sends", help="sends its window must hold before it can trip, or `none`")
    update.add_argument("--json", action="store_true")
    show = tenants.add_parser("show", help="one tenant, with why it is paused and its reputation window")
    show.add_argument("--tenant", required=True)
    show.add_argument("--json", action="store_true")

    keys = admin.add_parser("api-keys", help="API keys").add_subparsers(dest="action", required=True)
    key = keys.add_parser("create", help="create an API key (the token is printed once)")
    key.add_argument("--tenant", required=True)
    key.add_argument("--name", required=True)
    key.add_argument("--mode", choices=["live", "test"], required=True)
    key.add_argument("--permission", choices=["full_access", "sending_access"], default="full_access")
    key.add_argument("--domain-id")
    key.add_argument("--json", action="store_true")

    dead = admin.add_parser("dlq", help="dead letters (messages a consumer gave up on)")
    dead_actions = dead.add_subparsers(dest="action", required=True)
    dlq_list = dead_actions.add_parser("list", help="list dead letters, oldest first")
    dlq_list.add_argument("--consumer", help="only this consumer's (its durable name, e.g. api-email-log)")
    dlq_list.add_argument("--json", action="store_true", help="print them as JSON (payloads in base64)")
    dlq_replay = dead_actions.add_parser(
        "replay", help="publish dead letters to their original subject again, then remove them"
    )
    which = dlq_replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--seq", type=int, help="the dead letter's sequence (from `dlq list`)")
    which.add_argument("--all", action="store_true", help="every dead letter (of --consumer, if given)")
    dlq_replay.add_argument("--consumer", help="with --all: only this consumer's")
    sending_cmd = admin.add_parser(
        "sending", help="what the sending governor holds (asks a sender replica over NATS, like GET /admin/v1/sending)"
    )
    sending_cmd.add_argument("--json", action="store_true", help="print it as JSON (the operator API's shape)")
    return parser


class CliError(Exception):
    """Printed as `mailroom: <message>`; exit status 1."""


def _optional_number(value: str | None, name: str, kind: type[float] | type[int]) -> float | int | None:
    """A number, or None for `none` (back to the server's setting)."""
    if value is None or value.lower() == "none":
        return None
    try:
        return kind(value)
    except ValueError:
        raise ApiError(422, "validation_error", f"{name} must be a number or `none`", param=name) from None


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.4g}%"


def _reputation_line(t: Tenant) -> str:
    """The tenant's window in one line: sends, both rates against their thresholds, warn."""
    r = t.reputation
    if r is None:
        return "reputation=-"
    flag = " OVER" if r.over_threshold else " WARN" if r.warn else ""
    return (
        f"sends={r.sends}/{r.window_sends} bounces={r.hard_bounces} ({_rate(r.bounce_rate)} of"
        f" {_rate(r.bounce_rate_threshold)}) complaints={r.complaints} ({_rate(r.complaint_rate)} of"
        f" {_rate(r.complaint_rate_threshold)}){flag}"
    )


def _show(t: Tenant) -> None:
    print(f"{t.id}\t{t.name}\t{t.status}")
    if t.status_reason:
        print(f"reason: {t.status_reason}")
    if t.paused_at is not None:
        print(f"paused_at: {t.paused_at.isoformat()}")
    r = t.reputation
    if r is not None:
        print(
            f"reputation: {_reputation_line(t)}; min_sends={r.min_sends}"
            f" window since {r.window_start.isoformat()}{'' if r.guard else ' (guard off)'}"
        )


def _one_line(text: str, limit: int = 120) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


async def _quiet(exc: Exception) -> None:
    """nats-py logs every connection error with a traceback by default; the CLI reports it once."""


async def _connect_nats(settings: ApiSettings) -> Client:
    try:
        return await nats.connect(
            settings.nats_url,
            name="mailroom-cli",
            connect_timeout=5,
            allow_reconnect=False,
            max_reconnect_attempts=1,  # nats-py retries an initial connect for ever at 0 or -1
            reconnect_time_wait=0.5,
            error_cb=_quiet,
        )
    except Exception as exc:
        raise CliError(f"unavailable: NATS at MAILROOM_NATS_URL is unreachable ({exc!r})") from exc


def _quota(value: float | None) -> str:
    return "unlimited" if value is not None and value < 0 else f"{value:g}" if value is not None else "-"


async def _sending(args: argparse.Namespace, settings: ApiSettings) -> None:
    nc = await _connect_nats(settings)
    try:
        shown = await sending.get_sending(nc, rpc_timeout=settings.rpc_timeout_seconds)
    finally:
        await nc.close()
    if args.json:
        _print_json(shown)
        return
    q = shown.send_quota
    refreshed = q.refreshed_at.isoformat() if q.refreshed_at else "never"
    print(
        f"max_send_rate={_quota(q.max_send_rate)}\tmax_24_hour_send={_quota(q.max_24_hour_send)}"
        f"\tsent_last_24_hours={_quota(q.sent_last_24_hours)}\trefreshed_at={refreshed}"
        f"\ttransactional_reserve={shown.transactional_reserve}"
    )
    for s in shown.streams:
        state = f"held ({s.reason})" if s.held else "sending"
        print(f"{s.stream}\t{state}\twaiting={s.waiting}")
    for t in shown.tenants:
        print(f"{t.tenant_id}\t" + "\t".join(f"{k}={v}" for k, v in sorted(t.held.items())))


async def _dlq(args: argparse.Namespace, settings: ApiSettings) -> None:
    nc = await _connect_nats(settings)
    try:
        js = nc.jetstream()
        if args.action == "list":
            letters = await dlq.list_dead_letters(js, consumer=args.consumer)
            if args.json:
                _print_json({"data": [{"seq": d.seq, **msgspec.to_builtins(d.letter)} for d in letters]})
                return
            for d in letters:
                ll = d.letter
                print(
                    f"{d.seq}\t{ll.consumer}\t{ll.reason}\tdeliveries={ll.deliveries}\t{ll.subject}\t"
                    f"{ll.event_type or '-'}\t{ll.event_id or '-'}\t{ll.dead_lettered_at.isoformat()}\t"
                    f"{_one_line(ll.error)}"
                )
            return
        if args.consumer and not args.all:
            raise CliError("--consumer goes with --all")
        try:
            replayed = (
                await dlq.replay_all(js, consumer=args.consumer) if args.all else [await dlq.replay(js, args.seq)]
            )
        except LookupError as exc:
            raise CliError(f"not_found: {exc}") from None
        for d in replayed:
            print(f"replayed {d.seq}\t{d.letter.consumer}\t{d.letter.subject}\t{d.letter.event_id or '-'}")
    finally:
        await nc.close()


def _print_json(value: Any) -> None:
    print(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


async def _run(args: argparse.Namespace, settings: ApiSettings) -> None:
    if args.resource == "dlq":
        await _dlq(args, settings)
        return
    if args.resource == "sending":
        await _sending(args, settings)
        return
    async with await connect(settings.database_url, SCHEMA) as conn:
        missing = await pending(conn, SCHEMA, MIGRATIONS)
        if missing:
            raise CliError(
                f"the {SCHEMA} schema has migrations pending ({', '.join(missing)}); "
                "run `python -m mailroom_api migrate` first"
            )
        async with conn.transaction():
            if args.resource == "tenants" and args.action == "create":
                tenant = await tenants.create_tenant(
                    conn,
                    CreateTenant(
                        name=args.name,
                        monthly_quota=args.monthly_quota,
                        rate_limit=args.rate_limit,
                        rate_burst=args.rate_burst,
                        trial_ends_at=parse_timestamp(args.trial_ends_at, "trial_ends_at"),
                    ),
                    settings.reputation,
                )
                _print_json(tenant) if args.json else print(f"{tenant.id}\t{tenant.name}\t{tenant.status}")
            elif args.resource == "tenants" and args.action == "list":
                listed = await tenants.list_tenants(conn, settings.reputation)
                if args.json:
                    _print_json(TenantList(data=listed))
                for t in [] if args.json else listed:
                    print(
                        f"{t.id}\t{t.name}\t{t.status}\tquota={t.monthly_quota}\trate_limit={t.rate_limit}"
                        f"\t{_reputation_line(t)}"
                    )
            elif args.resource == "tenants" and args.action == "show":
                shown = await tenants.get_tenant(conn, args.tenant, settings.reputation)
                _print_json(shown) if args.json else _show(shown)
            elif args.resource == "tenants" and args.action == "update":
                changes = {
                    k: v
                    for k, v in (
                        ("name", args.name),
                        ("status", args.status),
                        ("status_reason", args.reason),
                        ("monthly_quota", args.monthly_quota),
                        ("rate_limit", args.rate_limit),
                        ("rate_burst", args.rate_burst),
                    )
                    if v is not None
                }
                if args.trial_ends_at is not None:  # issue 23; `none` clears it
                    trial = None if args.trial_ends_at.lower() == "none" else args.trial_ends_at
                    changes["trial_ends_at"] = parse_timestamp(trial, "trial_ends_at")
                for arg, field, kind in (  # issue 22; `none` clears them
                    (args.bounce_rate, "reputation_bounce_rate", float),
                    (args.complaint_rate, "reputation_complaint_rate", float),
                    (args.min_sends, "reputation_min_sends", int),
                ):
                    if arg is not None:
                        changes[field] = _optional_number(arg, field, kind)
                tenant = await tenants.update_tenant(conn, args.tenant, UpdateTenant(**changes), settings.reputation)
                _print_json(tenant) if args.json else print(f"{tenant.id}\t{tenant.name}\t{tenant.status}")
            elif args.resource == "api-keys" and args.action == "create":
                created = await keys.create_api_key(
                    conn,
                    args.tenant,
                    CreateApiKey(name=args.name, mode=args.mode, permission=args.permission, domain_id=args.domain_id),
                )
                if args.json:
                    _print_json(created)
                else:
                    print(f"{created.id}\t{created.mode}\t{created.permission}")
                    print(f"token (shown once): {created.token}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = ApiSettings.from_env()
    except SettingsError as exc:
        print(f"mailroom: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(args, settings))
    except ApiError as exc:
        where = f" ({exc.param})" if exc.param else ""
        print(f"mailroom: {exc.code}: {exc.message}{where}", file=sys.stderr)
        return 1
    except CliError as exc:
        print(f"mailroom: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

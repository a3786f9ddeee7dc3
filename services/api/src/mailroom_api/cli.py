"""`mailroom admin …`: the operator API as a command line, working directly on the database
through the same service layer (MAILROOM_DATABASE_URL).

    mailroom admin tenants create --name N [--monthly-quota Q] [--rate-limit R] [--json]
    mailroom admin tenants list [--json]
    mailroom admin tenants update --tenant ten_… [--status active|paused|blocked] [--monthly-quota Q]
                                  [--rate-limit R] [--json]
    mailroom admin api-keys create --tenant ten_… --name N --mode live|test [--permission P] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import msgspec
from mailroom_kit.db import connect
from mailroom_kit.migrations import migrate
from mailroom_kit.settings import SettingsError

from mailroom_api.app import MIGRATIONS, SCHEMA
from mailroom_api.errors import ApiError
from mailroom_api.keys import service as keys
from mailroom_api.keys.schemas import CreateApiKey
from mailroom_api.settings import ApiSettings
from mailroom_api.tenants import service as tenants
from mailroom_api.tenants.schemas import CreateTenant, TenantList, UpdateTenant


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailroom", description="Mailroom operator commands")
    top = parser.add_subparsers(dest="area", required=True)
    admin = top.add_parser("admin", help="operator commands").add_subparsers(dest="resource", required=True)

    tenants = admin.add_parser("tenants", help="tenants").add_subparsers(dest="action", required=True)
    create = tenants.add_parser("create", help="create a tenant")
    create.add_argument("--name", required=True)
    create.add_argument("--monthly-quota", type=int)
    create.add_argument("--rate-limit", type=int)
    create.add_argument("--json", action="store_true", help="print the tenant as JSON")
    listing = tenants.add_parser("list", help="list tenants")
    listing.add_argument("--json", action="store_true")
    update = tenants.add_parser("update", help="change a tenant's status, quota or rate limit")
    update.add_argument("--tenant", required=True)
    update.add_argument("--name")
    update.add_argument("--status", choices=["active", "paused", "blocked"])
    update.add_argument("--monthly-quota", type=int)
    update.add_argument("--rate-limit", type=int)
    update.add_argument("--json", action="store_true")

    keys = admin.add_parser("api-keys", help="API keys").add_subparsers(dest="action", required=True)
    key = keys.add_parser("create", help="create an API key (the token is printed once)")
    key.add_argument("--tenant", required=True)
    key.add_argument("--name", required=True)
    key.add_argument("--mode", choices=["live", "test"], required=True)
    key.add_argument("--permission", choices=["full_access", "sending_access"], default="full_access")
    key.add_argument("--domain-id")
    key.add_argument("--json", action="store_true")
    return parser


def _print_json(value: Any) -> None:
    print(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


async def _run(args: argparse.Namespace, settings: ApiSettings) -> None:
    await migrate(settings.database_url, SCHEMA, MIGRATIONS)
    async with await connect(settings.database_url, SCHEMA) as conn:
        async with conn.transaction():
            if args.resource == "tenants" and args.action == "create":
                tenant = await tenants.create_tenant(
                    conn,
                    CreateTenant(name=args.name, monthly_quota=args.monthly_quota, rate_limit=args.rate_limit),
                )
                _print_json(tenant) if args.json else print(f"{tenant.id}\t{tenant.name}\t{tenant.status}")
            elif args.resource == "tenants" and args.action == "list":
                listed = await tenants.list_tenants(conn)
                if args.json:
                    _print_json(TenantList(data=listed))
                for t in [] if args.json else listed:
                    print(f"{t.id}\t{t.name}\t{t.status}\tquota={t.monthly_quota}\trate_limit={t.rate_limit}")
            elif args.resource == "tenants" and args.action == "update":
                changes = {
                    k: v
                    for k, v in (
                        ("name", args.name),
                        ("status", args.status),
                        ("monthly_quota", args.monthly_quota),
                        ("rate_limit", args.rate_limit),
                    )
                    if v is not None
                }
                tenant = await tenants.update_tenant(conn, args.tenant, UpdateTenant(**changes))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())

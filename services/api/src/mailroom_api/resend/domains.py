"""`/resend/domains` (issue 21): Resend's domain routes over the same domain service as
`/v1/domains` (`mailroom_api.domains.service`, the domains service behind it). Resend's fields map
to Mailroom's: `custom_return_path` is the MAIL FROM subdomain, `open_tracking` / `click_tracking`
the tracking defaults. Records are in Resend's shape (`record`: DKIM, SPF for the MAIL FROM MX and
TXT, DMARC; `name` relative to the domain as DNS providers take it; `ttl` "Auto") with Mailroom's
per-record status. `tracking_subdomain` (a custom tracking domain) and `tls: "enforced"` have no
counterpart and are refused with a validation_error naming the field."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import JSONBody

from mailroom_api.checks import DomainIdPath
from mailroom_api.domains import service
from mailroom_api.domains.schemas import DNS_CHARS, CreateDomain, Domain, DomainRecord, UpdateDomain
from mailroom_api.errors import validation
from mailroom_api.http.body import Request
from mailroom_api.http.guards import TENANT, TENANT_SECURITY, Caller, Rt, Settings
from mailroom_api.resend.paging import PageAfter, PageBefore, PageLimit, page
from mailroom_api.resend.responses import documented

# Mailroom's record purpose → Resend's `record`.
RECORD_KIND = {"dkim": "DKIM", "mail_from_mx": "SPF", "mail_from_spf": "SPF", "dmarc": "DMARC"}

DnsName = Annotated[str, msgspec.Meta(min_length=1, max_length=253, pattern=DNS_CHARS)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=63, pattern=DNS_CHARS)]
Region = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[a-z0-9-]+$")]


class ResendCreateDomain(Request, frozen=True, kw_only=True):
    name: DnsName
    region: Region | None = None
    custom_return_path: Label | None = None
    open_tracking: bool = False
    click_tracking: bool = False
    tracking_subdomain: str | None = None  # refused: no custom tracking domains


class ResendUpdateDomain(Request, frozen=True, kw_only=True):
    id: str | msgspec.UnsetType = msgspec.UNSET  # the Python SDK repeats the path's id in the body
    open_tracking: bool | None = None
    click_tracking: bool | None = None
    tls: Literal["opportunistic", "enforced"] | None = None
    tracking_subdomain: str | None = None


class ResendRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    record: str
    name: str
    type: str
    ttl: str
    status: str
    value: str
    priority: int | None = None  # MX only


class ResendDomain(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "domain"
    id: str
    name: str
    status: str
    created_at: datetime
    region: str
    records: list[ResendRecord]
    open_tracking: bool
    click_tracking: bool


class ResendDomainItem(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    status: str
    created_at: datetime
    region: str


class ResendDomainList(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "list"
    has_more: bool
    data: list[ResendDomainItem]


class ResendDomainRef(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "domain"
    id: str


class ResendDomainDeleted(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "domain"
    id: str
    deleted: bool = True


def relative(name: str, domain: str) -> str:
    """`send.acme.com` in the zone `acme.com` → `send` (the domain itself → `@`)."""
    if name == domain:
        return "@"
    return name.removesuffix("." + domain)


def _record(r: DomainRecord, domain: str) -> ResendRecord:
    return ResendRecord(
        record=RECORD_KIND.get(r.purpose, r.purpose.upper()),
        name=relative(r.name, domain),
        type=r.type,
        ttl="Auto",
        status=r.status,
        value=r.value,
        priority=r.priority,
    )


def _view(d: Domain) -> ResendDomain:
    return ResendDomain(
        id=d.id,
        name=d.name,
        status=d.status,
        created_at=d.created_at,
        region=d.region,
        records=[_record(r, d.name) for r in d.records],
        open_tracking=d.track_opens,
        click_tracking=d.track_clicks,
    )


def _refuse_tracking_subdomain(value: str | None) -> None:
    if value is not None:
        raise validation("custom tracking subdomains are not supported by Mailroom", "tracking_subdomain")


class ResendDomainsController(Controller):
    path = "/domains"
    security = TENANT_SECURITY
    opt = TENANT

    @post("/", status_code=200, summary="Create a domain (Resend: domains.create)", responses=documented(409))
    async def create_domain(
        self, data: JSONBody[ResendCreateDomain], rt: Rt, settings: Settings, principal: Caller
    ) -> ResendDomain:
        _refuse_tracking_subdomain(data.tracking_subdomain)
        req = CreateDomain(
            name=data.name,
            mail_from_subdomain=data.custom_return_path or "bounce",
            track_opens=data.open_tracking,
            track_clicks=data.click_tracking,
            region=data.region,
        )
        created = await service.create_domain(
            rt.pool, rt.nc, principal.tenant_id, req, rpc_timeout=settings.rpc_timeout_seconds
        )
        return _view(created)

    @get("/", summary="List domains (Resend: domains.list)", responses=documented())
    async def list_domains(
        self,
        rt: Rt,
        principal: Caller,
        limit: PageLimit = None,
        after: PageAfter = None,
        before: PageBefore = None,
    ) -> ResendDomainList:
        async with rt.pool.connection() as conn:
            found = await service.list_domains(conn, principal.tenant_id)
        newest = sorted(found, key=lambda d: (d.created_at, d.id), reverse=True)
        items = [
            ResendDomainItem(id=d.id, name=d.name, status=d.status, created_at=d.created_at, region=d.region)
            for d in newest
        ]
        data, has_more = page(items, limit=limit, after=after, before=before)
        return ResendDomainList(has_more=has_more, data=data)

    @get("/{domain_id:str}", summary="Get a domain (Resend: domains.get)", responses=documented(404))
    async def get_domain(self, domain_id: DomainIdPath, rt: Rt, principal: Caller) -> ResendDomain:
        async with rt.pool.connection() as conn:
            return _view(await service.get_domain(conn, principal.tenant_id, domain_id))

    @patch(
        "/{domain_id:str}",
        summary="Update a domain's tracking (Resend: domains.update)",
        description="`open_tracking`, `click_tracking`; `tls` may only be `opportunistic` (SES's default).",
        responses=documented(404),
    )
    async def update_domain(
        self,
        domain_id: DomainIdPath,
        data: JSONBody[ResendUpdateDomain],
        rt: Rt,
        settings: Settings,
        principal: Caller,
    ) -> ResendDomainRef:
        if isinstance(data.id, str) and data.id != domain_id:
            raise validation("id in the body must be the path's", "id")
        _refuse_tracking_subdomain(data.tracking_subdomain)
        if data.tls == "enforced":
            raise validation("tls: enforced is not supported by Mailroom (TLS is opportunistic)", "tls")
        if data.open_tracking is None and data.click_tracking is None:
            async with rt.pool.connection() as conn:  # nothing to change (e.g. only tls: opportunistic)
                await service.get_domain(conn, principal.tenant_id, domain_id)
            return ResendDomainRef(id=domain_id)
        change = UpdateDomain(track_opens=data.open_tracking, track_clicks=data.click_tracking)
        async with rt.pool.connection() as conn, conn.transaction():
            await service.update_domain(
                conn, rt.nc, principal.tenant_id, domain_id, change, rpc_timeout=settings.rpc_timeout_seconds
            )
        return ResendDomainRef(id=domain_id)

    @post(
        "/{domain_id:str}/verify",
        status_code=200,
        summary="Check the domain now (Resend: domains.verify)",
        responses=documented(404),
    )
    async def verify_domain(
        self, domain_id: DomainIdPath, rt: Rt, settings: Settings, principal: Caller
    ) -> ResendDomainRef:
        async with rt.pool.connection() as conn:
            await service.verify_domain(
                conn, rt.nc, principal.tenant_id, domain_id, rpc_timeout=settings.rpc_timeout_seconds
            )
        return ResendDomainRef(id=domain_id)

    @delete(
        "/{domain_id:str}",
        status_code=200,
        summary="Remove a domain and its SES identity (Resend: domains.remove)",
        responses=documented(404),
    )
    async def remove_domain(
        self, domain_id: DomainIdPath, rt: Rt, settings: Settings, principal: Caller
    ) -> ResendDomainDeleted:
        async with rt.pool.connection() as conn, conn.transaction():
            await service.delete_domain(
                conn, rt.nc, principal.tenant_id, domain_id, rpc_timeout=settings.rpc_timeout_seconds
            )
        return ResendDomainDeleted(id=domain_id)

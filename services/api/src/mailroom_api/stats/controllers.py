"""Stats route (`GET /v1/stats`)."""

from __future__ import annotations

import re
from typing import Annotated

from litestar import Controller, get
from litestar.params import QueryParameter

from mailroom_api.checks import RFC3339, parse_timestamp
from mailroom_api.errors import validation
from mailroom_api.http.errors import documented
from mailroom_api.http.guards import TENANT, TENANT_SECURITY, Caller, Rt
from mailroom_api.stats import service
from mailroom_api.stats.schemas import Stats


class StatsController(Controller):
    path = "/v1/stats"
    tags = ["stats"]
    security = TENANT_SECURITY
    opt = TENANT

    @get(
        "/",
        summary="Delivery stats per UTC hour or day",
        description=(
            "Counts of the key's mode (test and live apart) in [from, to): per bucket (empty ones"
            " included; `from` is rounded down to its bucket) and in total. Recipients for sent,"
            " delivered, delivery_delayed, bounced, complained, suppressed and unsubscribed; events"
            " for opened and clicked (`*_unique`: emails, their first); emails for failed."
            " `bounce_rate` is hard bounces / sent, `complaint_rate` complaints / sent."
            " Defaults: to = now, from = 24 hours (hour) or 30 days (day) before; at most 31 days"
            " of hours or 400 days of days."
        ),
        responses=documented(401, 403, 422),
    )
    async def get_stats(
        self,
        rt: Rt,
        principal: Caller,
        from_: Annotated[
            str | None, QueryParameter(query="from", format="date-time", description="start (RFC 3339)")
        ] = None,
        to: Annotated[str | None, QueryParameter(pattern=RFC3339, format="date-time", description="end")] = None,
        granularity: Annotated[str, QueryParameter(enum=["hour", "day"], description="bucket size (UTC)")] = "day",
        domain: Annotated[str | None, QueryParameter(max_length=253, description="the from-domain")] = None,
        tag: Annotated[str | None, QueryParameter(max_length=513, description="`key:value`")] = None,
    ) -> Stats:
        # `from` is checked here, not by a route pattern: Litestar would name the Python parameter.
        if from_ is not None and not re.fullmatch(RFC3339, from_):
            raise validation("from must be an RFC 3339 timestamp with an offset", "from")
        async with rt.pool.connection() as conn:
            return await service.get_stats(
                conn,
                principal,
                start=parse_timestamp(from_, "from"),
                end=parse_timestamp(to, "to"),
                granularity=granularity,
                domain=domain,
                tag=tag,
            )

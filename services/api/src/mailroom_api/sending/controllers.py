"""Operator route for the sending governor (`/admin/v1/sending`)."""

from __future__ import annotations

from litestar import Controller, get

from mailroom_api.http.errors import documented
from mailroom_api.http.guards import OPERATOR, OPERATOR_SECURITY, Rt
from mailroom_api.sending import service
from mailroom_api.sending.schemas import Sending


class AdminSendingController(Controller):
    path = "/admin/v1/sending"
    tags = ["operator"]
    security = OPERATOR_SECURITY
    opt = OPERATOR

    @get(
        "/",
        summary="What the sending governor holds: SES quota, sends in 24 h, held streams and tenants",
        responses=documented(401, 503),
    )
    async def get_sending(self, rt: Rt) -> Sending:
        return await service.get_sending(rt.nc, rpc_timeout=rt.settings.rpc_timeout_seconds)

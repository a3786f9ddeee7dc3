"""The HTTP layer: SES v2 REST-JSON routes (as boto3's ``sesv2`` client calls them) and ``/_emulator``."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any
from xml.sax.saxutils import escape

from litestar import Litestar, Request, Response, delete, get, post, put
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery
from litestar.types import ControllerRouterHandler

from .config import EmulatorConfig
from .errors import SesError, bad_request, not_found
from .send_limits import send_times_report
from .service import Emulator

log = logging.getLogger(__name__)

SNS_XMLNS = "http://sns.amazonaws.com/doc/2010-03-31/"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(
        content=json.dumps(data).encode("utf-8"),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _ses(data: Any, status: int = 200) -> Response[bytes]:
    return _json(data, status, {"x-amzn-RequestId": str(uuid.uuid4())})


def ses_error_response(exc: SesError) -> Response[bytes]:
    return _json(
        {"message": exc.message},
        exc.status,
        {"x-amzn-RequestId": str(uuid.uuid4()), "x-amzn-ErrorType": exc.code},
    )


def _xml(body: str, status: int = 200) -> Response[bytes]:
    return Response(
        content=('<?xml version="1.0"?>\n' + body).encode("utf-8"), status_code=status, media_type="text/xml"
    )


def _sns_error(code: str, message: str, status: int) -> Response[bytes]:
    return _xml(
        f'<ErrorResponse xmlns="{SNS_XMLNS}">\n'
        f"  <Error>\n    <Type>Sender</Type>\n    <Code>{escape(code)}</Code>\n"
        f"    <Message>{escape(message)}</Message>\n  </Error>\n"
        f"  <RequestId>{uuid.uuid4()}</RequestId>\n</ErrorResponse>\n",
        status,
    )


async def _body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise bad_request("Request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise bad_request("Request body must be a JSON object.")
    return data


def _source_ip(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "127.0.0.1"


def build_routes(emu: Emulator) -> list[ControllerRouterHandler]:
    # ---- SES v2: identities ----
    @post("/v2/email/identities")
    async def create_email_identity(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _ses(emu.create_email_identity(await _body(request)))

    @get("/v2/email/identities/{identity:str}")
    async def get_email_identity(identity: FromPath[str]) -> Response[bytes]:
        return _ses(emu.get_email_identity(identity))

    @delete("/v2/email/identities/{identity:str}", status_code=200)
    async def delete_email_identity(identity: FromPath[str]) -> Response[bytes]:
        emu.delete_email_identity(identity)
        return _ses({})

    @post("/v2/email/list-identities")
    async def list_email_identities(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _ses(emu.list_email_identities(await _body(request)))

    @get("/v2/email/identities")
    async def list_email_identities_get(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _ses(emu.list_email_identities(dict(request.query_params)))

    @put("/v2/email/identities/{identity:str}/mail-from")
    async def put_mail_from(identity: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        emu.put_mail_from(identity, await _body(request))
        return _ses({})

    @put("/v2/email/identities/{identity:str}/dkim")
    async def put_dkim(identity: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        emu.put_dkim_attributes(identity, await _body(request))
        return _ses({})

    # ---- SES v2: configuration sets ----
    @post("/v2/email/configuration-sets")
    async def create_configuration_set(request: Request[Any, Any, Any]) -> Response[bytes]:
        emu.create_configuration_set(await _body(request))
        return _ses({})

    @get("/v2/email/configuration-sets")
    async def list_configuration_sets_get(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _ses(emu.list_configuration_sets(dict(request.query_params)))

    @post("/v2/email/list-configuration-sets")
    async def list_configuration_sets(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _ses(emu.list_configuration_sets(await _body(request)))

    @get("/v2/email/configuration-sets/{name:str}")
    async def get_configuration_set(name: FromPath[str]) -> Response[bytes]:
        return _ses(emu.get_configuration_set(name))

    @delete("/v2/email/configuration-sets/{name:str}", status_code=200)
    async def delete_configuration_set(name: FromPath[str]) -> Response[bytes]:
        emu.delete_configuration_set(name)
        return _ses({})

    @post("/v2/email/configuration-sets/{name:str}/event-destinations")
    async def create_event_destination(name: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        emu.create_event_destination(name, await _body(request))
        return _ses({})

    @get("/v2/email/configuration-sets/{name:str}/event-destinations")
    async def get_event_destinations(name: FromPath[str]) -> Response[bytes]:
        return _ses(emu.get_event_destinations(name))

    @put("/v2/email/configuration-sets/{name:str}/event-destinations/{dest:str}")
    async def update_event_destination(
        name: FromPath[str], dest: FromPath[str], request: Request[Any, Any, Any]
    ) -> Response[bytes]:
        emu.update_event_destination(name, dest, await _body(request))
        return _ses({})

    @delete("/v2/email/configuration-sets/{name:str}/event-destinations/{dest:str}", status_code=200)
    async def delete_event_destination(name: FromPath[str], dest: FromPath[str]) -> Response[bytes]:
        emu.delete_event_destination(name, dest)
        return _ses({})

    # ---- SES v2: account and sending ----
    @get("/v2/email/account")
    async def get_account() -> Response[bytes]:
        return _ses(emu.get_account())

    @post("/v2/email/outbound-emails")
    async def send_email(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _ses(emu.send_email(await _body(request), _source_ip(request)))

    # ---- SNS look-alike ----
    @get(f"/_emulator/{emu.signer.cert_filename}")
    async def signing_cert() -> Response[bytes]:
        return Response(content=emu.signer.cert_pem, media_type="application/x-pem-file")

    @get("/_emulator/sns/confirm")
    async def confirm_subscription(request: Request[Any, Any, Any]) -> Response[bytes]:
        topic = request.query_params.get("TopicArn") or ""
        token = request.query_params.get("Token") or ""
        try:
            sub = emu.confirm_subscription(topic, token)
        except KeyError:
            return _sns_error("InvalidParameter", "Invalid token", 400)
        return _xml(
            f'<ConfirmSubscriptionResponse xmlns="{SNS_XMLNS}">\n'
            f"  <ConfirmSubscriptionResult>\n"
            f"    <SubscriptionArn>{escape(sub.subscription_arn)}</SubscriptionArn>\n"
            f"  </ConfirmSubscriptionResult>\n"
            f"  <ResponseMetadata>\n    <RequestId>{uuid.uuid4()}</RequestId>\n  </ResponseMetadata>\n"
            f"</ConfirmSubscriptionResponse>\n"
        )

    @get("/_emulator/sns/unsubscribe")
    async def unsubscribe(request: Request[Any, Any, Any]) -> Response[bytes]:
        arn = request.query_params.get("SubscriptionArn") or ""
        try:
            emu.unsubscribe(arn)
        except KeyError:
            return _sns_error("NotFound", "Subscription does not exist", 404)
        return _xml(
            f'<UnsubscribeResponse xmlns="{SNS_XMLNS}">\n'
            f"  <ResponseMetadata>\n    <RequestId>{uuid.uuid4()}</RequestId>\n  </ResponseMetadata>\n"
            f"</UnsubscribeResponse>\n"
        )

    # ---- inspection ----
    @get("/health")
    async def health() -> Response[bytes]:
        return _json({"status": "ok"})

    @get("/_emulator/sent")
    async def list_sent(raw: FromQuery[bool] = True) -> Response[bytes]:
        """Every message sent, oldest first; `?raw=false` leaves out the raw MIME (a bench reads
        tens of thousands of them)."""
        messages = [m.to_json() for m in emu.sent]
        if not raw:
            for m in messages:
                del m["raw"]
        return _json({"messages": messages})

    # ---- issue 23: send quota, throttling on demand, send timestamps (send_limits.py) ----
    @get("/_emulator/send-quota")
    async def get_send_quota() -> Response[bytes]:
        return _json(emu.limits.quota())

    @put("/_emulator/send-quota")
    async def put_send_quota(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _json(emu.limits.set_quota(await _body(request)))

    @post("/_emulator/throttle", status_code=200)
    async def inject_throttling(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _json(emu.limits.inject_throttling(await _body(request)))

    @get("/_emulator/send-times")
    async def send_times(since: FromQuery[float | None] = None) -> Response[bytes]:
        return _json(send_times_report(emu.send_times(), since))

    @delete("/_emulator/sent", status_code=200)
    async def clear_sent() -> Response[bytes]:
        emu.sent.clear()
        return _json({"messages": []})

    @post("/_emulator/sent/{message_id:str}/open", status_code=200)
    async def fire_open(message_id: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        """Publish an SES Open event for a sent message (body: ip_address?, user_agent?)."""
        return _json(emu.fire_engagement(message_id, "open", await _body(request)))

    @post("/_emulator/sent/{message_id:str}/click", status_code=200)
    async def fire_click(message_id: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        """Publish an SES Click event for a sent message (body: link?, link_tags?, ip_address?, user_agent?)."""
        return _json(emu.fire_engagement(message_id, "click", await _body(request)))

    @post("/_emulator/sent/{message_id:str}/unsubscribe", status_code=200)
    async def fire_unsubscribe(message_id: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        """Publish an SES Subscription event (unsubscribe all) for a sent message (body: recipient?, contact_list?)."""
        return _json(emu.fire_engagement(message_id, "subscription", await _body(request)))

    @get("/_emulator/identities")
    async def list_identities() -> Response[bytes]:
        return _json({"identities": [emu.identity_json(i) for i in emu.state.identities.values()]})

    @get("/_emulator/identity-reads")
    async def identity_reads() -> Response[bytes]:
        """How many GetEmailIdentity calls each identity got (also for identities that do not exist)."""
        return _json({"reads": dict(emu.identity_reads)})

    @post("/_emulator/identities/{identity:str}/verification")
    async def set_identity_status(identity: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        return _json(emu.set_identity_status(identity, await _body(request)))

    @get("/_emulator/configuration-sets")
    async def list_config_sets() -> Response[bytes]:
        return _json(
            {
                "configuration_sets": [
                    {"name": cs.name, "event_destinations": list(cs.event_destinations.values())}
                    for cs in emu.state.configuration_sets.values()
                ]
            }
        )

    @get("/_emulator/subscriptions")
    async def list_subscriptions() -> Response[bytes]:
        return _json(
            {
                "subscriptions": [
                    {
                        "topic_arn": s.topic_arn,
                        "endpoint": s.endpoint,
                        "subscription_arn": s.subscription_arn,
                        "confirmed": s.confirmed,
                        "subscribe_url": emu.publisher.subscribe_url(s),
                    }
                    for s in emu.state.subscriptions
                ]
            }
        )

    @post("/_emulator/subscriptions/resend-confirmations", status_code=200)
    async def resend_confirmations() -> Response[bytes]:
        return _json({"sent": emu.resend_confirmations()})

    @get("/_emulator/notifications")
    async def list_notifications(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Optional filters: ?ses_message_id=&event_type=&state=&type="""
        filters = {
            k: request.query_params[k]
            for k in ("ses_message_id", "event_type", "state", "type")
            if request.query_params.get(k)
        }
        records = [r.to_json() for r in emu.publisher.records]
        if filters:
            records = [r for r in records if all(r[k] == v for k, v in filters.items())]
        return _json({"pending_jobs": emu.publisher.pending_jobs, "notifications": records})

    @post("/_emulator/notifications/{sns_message_id:str}/redeliver", status_code=200)
    async def redeliver_notification(sns_message_id: FromPath[str]) -> Response[bytes]:
        """Deliver a notification again, unchanged (same MessageId and signature), as SNS may."""
        queued = emu.publisher.redeliver(sns_message_id)
        if not queued:
            raise not_found(f"No recent notification with MessageId {sns_message_id}.")
        return _json({"sns_message_id": sns_message_id, "queued": queued})

    @delete("/_emulator/notifications", status_code=200)
    async def clear_notifications() -> Response[bytes]:
        emu.publisher.records.clear()
        return _json({"notifications": []})

    return [
        create_email_identity,
        get_email_identity,
        delete_email_identity,
        list_email_identities,
        list_email_identities_get,
        put_mail_from,
        put_dkim,
        create_configuration_set,
        list_configuration_sets_get,
        list_configuration_sets,
        get_configuration_set,
        delete_configuration_set,
        create_event_destination,
        get_event_destinations,
        update_event_destination,
        delete_event_destination,
        get_account,
        send_email,
        signing_cert,
        confirm_subscription,
        unsubscribe,
        health,
        list_sent,
        get_send_quota,
        put_send_quota,
        inject_throttling,
        send_times,
        clear_sent,
        fire_open,
        fire_click,
        fire_unsubscribe,
        redeliver_notification,
        list_identities,
        identity_reads,
        set_identity_status,
        list_config_sets,
        list_subscriptions,
        resend_confirmations,
        list_notifications,
        clear_notifications,
    ]


def _ses_error_handler(request: Request[Any, Any, Any], exc: SesError) -> Response[bytes]:
    return ses_error_response(exc)


def _http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if request.url.path.startswith("/v2/"):
        code = "NotFoundException" if exc.status_code == 404 else "BadRequestException"
        return ses_error_response(SesError(code, str(exc.detail), exc.status_code))
    return _json({"error": str(exc.detail)}, exc.status_code)


def _internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return ses_error_response(SesError("InternalServiceErrorException", f"Internal error: {exc}", 500))


def create_app(config: EmulatorConfig | None = None, emulator: Emulator | None = None) -> Litestar:
    """Build the ASGI app. ``app.state.emulator`` is the :class:`Emulator` behind it."""
    emu = emulator or Emulator(config or EmulatorConfig.from_env())

    async def on_startup() -> None:
        await emu.start()

    async def on_shutdown() -> None:
        await emu.stop()

    app = Litestar(
        route_handlers=build_routes(emu),
        exception_handlers={
            SesError: _ses_error_handler,
            HTTPException: _http_error_handler,
            Exception: _internal_error_handler,
        },
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        openapi_config=None,
        logging_config=None,
        debug=False,
        # A 40 MB raw message is about 53 MB once base64 in the SendEmail JSON.
        request_max_body_size=64 * 1024 * 1024,
    )
    app.state.emulator = emu
    return app

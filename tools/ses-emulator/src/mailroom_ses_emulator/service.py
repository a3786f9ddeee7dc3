"""The emulator's behaviour, independent of HTTP: SES v2 operations, SNS subscriptions, inspection."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import secrets
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from .config import EmulatorConfig
from .dns_verification import DnsVerifier
from .errors import SesError, already_exists, bad_request, message_rejected, not_found
from .mime import ParsedMessage, bare_address, bare_addresses, build_simple, decode_words, parse_raw
from .send_limits import SendLimits
from .ses_events import EVENT_TYPE_KEYS, EVENT_TYPE_NAMES, MailContext, build_records, mail_object
from .signing import SnsSigner
from .sns import EVENT_SUBJECT, VALIDATION_MESSAGE, OutboundMessage, SnsPublisher
from .state import ConfigurationSet, Identity, State, StateStore, Subscription
from .util import iso_ms, ses_message_id

log = logging.getLogger(__name__)

VERIFICATION_STATUSES = ("PENDING", "SUCCESS", "FAILED", "TEMPORARY_FAILURE", "NOT_STARTED")
_DKIM_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
# SES's limit on a raw message ("40 MB", attachments included, with a raised account limit).
MAX_MESSAGE_BYTES = 40_000_000
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")
_SNS_ARN_RE = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
_OPTION_KEYS = (
    "TrackingOptions",
    "DeliveryOptions",
    "ReputationOptions",
    "SendingOptions",
    "SuppressionOptions",
    "VdmOptions",
    "ArchivingOptions",
    "MessageSecurityOptions",
)
_DEST_KINDS = (
    "KinesisFirehoseDestination",
    "CloudWatchDestination",
    "SnsDestination",
    "EventBridgeDestination",
    "PinpointDestination",
)
MAX_RECIPIENTS = 50


_ENGAGEMENT = {"open": "Open", "click": "Click", "subscription": "Subscription"}


@dataclass
class SentMessage:
    message_id: str
    from_: str
    destinations: list[str]
    configuration_set: str | None
    tags: dict[str, str]
    subject: str | None
    raw: bytes
    timestamp: float
    # The raw message's size in bytes and SHA-256 (hex), so a test compares a large message cheaply.
    size: int = 0
    sha256: str = ""
    # The caller's address (the `ses:source-ip` tag), kept to publish later Open/Click events alike.
    source_ip: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if not self.sha256:
            self.size = len(self.raw)
            self.sha256 = hashlib.sha256(self.raw).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "from": self.from_,
            "destinations": self.destinations,
            "configuration_set": self.configuration_set,
            "tags": self.tags,
            "subject": self.subject,
            "raw": self.raw.decode("utf-8", errors="replace"),
            "timestamp": iso_ms(self.timestamp),
            "size": self.size,
            "sha256": self.sha256,
        }


def _dkim_token() -> str:
    return "".join(secrets.choice(_DKIM_ALPHABET) for _ in range(32))


def _require_str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise bad_request(f"{key} is required.")
    return value


def _string_list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"{name} must be a list of strings.")
    return list(value)


class Emulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.store = StateStore(config.state_dir)
        self.state: State = self.store.load()
        self.signer = SnsSigner.load_or_create(config.state_dir)
        self.publisher = SnsPublisher(config, self.signer)
        self.sent: deque[SentMessage] = deque(maxlen=config.max_sent_kept)
        self._send_times: deque[float] = deque()
        self._rate_window: deque[float] = deque()
        self.dns_verifier: DnsVerifier | None = None
        if config.verify == "dns" and config.dns_server:
            self.dns_verifier = DnsVerifier(
                config.dns_server, region=config.region, cache_seconds=config.dns_cache_seconds
            )
        # issue 23: adjustable SendQuota, throttling on demand (send_limits.py).
        self.limits = SendLimits(config)
        # GetEmailIdentity calls per identity (lower-case name), for tests that prove a check was
        # made once (GET /_emulator/identity-reads); one small counter per identity ever asked for.
        self.identity_reads: Counter[str] = Counter()
        self._sync_subscriptions()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.publisher.start()
        # Destinations loaded from state whose subscriptions are not confirmed yet.
        for topic in sorted(self._topics_with_destinations()):
            for sub in self._subs_for(topic):
                if not sub.confirmed:
                    self._send_confirmation(sub)
        self._save()

    async def stop(self) -> None:
        await self.publisher.stop()

    def _save(self) -> None:
        self.store.save(self.state)

    # -- subscriptions ---------------------------------------------------------------------------
    def _sync_subscriptions(self) -> None:
        """Make the state's subscriptions exactly those configured, keeping known ones (and their
        confirmation) when topic and endpoint are unchanged."""
        known = {(s.topic_arn, s.endpoint): s for s in self.state.subscriptions}
        subs: list[Subscription] = []
        for cfg in self.config.sns_subscriptions:
            existing = known.get((cfg.topic_arn, cfg.endpoint))
            if existing is None:
                existing = Subscription(
                    topic_arn=cfg.topic_arn,
                    endpoint=cfg.endpoint,
                    subscription_arn=f"{cfg.topic_arn}:{uuid.uuid4()}",
                    token=secrets.token_hex(64),
                )
            if existing not in subs:
                subs.append(existing)
        self.state.subscriptions = subs

    def _subs_for(self, topic_arn: str) -> list[Subscription]:
        return [s for s in self.state.subscriptions if s.topic_arn == topic_arn]

    def _topics_with_destinations(self) -> set[str]:
        topics: set[str] = set()
        for cs in self.state.configuration_sets.values():
            for dest in cs.event_destinations.values():
                topic = (dest.get("SnsDestination") or {}).get("TopicArn")
                if topic:
                    topics.add(topic)
        return topics

    def _send_confirmation(self, sub: Subscription) -> None:
        sub.confirmation_sent_at = time.time()
        self.publisher.submit([self.publisher.confirmation(sub)])

    def _validation_message(self, sub: Subscription) -> OutboundMessage:
        return self.publisher.notification(
            sub,
            VALIDATION_MESSAGE,
            subject=None,
            sns_message_id=str(uuid.uuid4()),
            timestamp=time.time(),
            event_type=None,
            ses_message_id=None,
        )

    def _destination_added(self, topic_arn: str) -> None:
        subs = self._subs_for(topic_arn)
        if not subs:
            log.info("no SNS subscriber configured for %s; its events are only logged", topic_arn)
        for sub in subs:
            if sub.confirmed:
                self.publisher.submit([self._validation_message(sub)])
            else:
                self._send_confirmation(sub)

    def confirm_subscription(self, topic_arn: str, token: str) -> Subscription:
        for sub in self._subs_for(topic_arn):
            if secrets.compare_digest(sub.token, token):
                if not sub.confirmed:
                    sub.confirmed = True
                    sub.confirmed_at = time.time()
                    self._save()
                    if topic_arn in self._topics_with_destinations():
                        self.publisher.submit([self._validation_message(sub)])
                return sub
        raise KeyError(topic_arn)

    def unsubscribe(self, subscription_arn: str) -> Subscription:
        for sub in self.state.subscriptions:
            if sub.subscription_arn == subscription_arn:
                sub.confirmed = False
                sub.confirmed_at = None
                self._save()
                return sub
        raise KeyError(subscription_arn)

    def resend_confirmations(self) -> int:
        n = 0
        for sub in self.state.subscriptions:
            if not sub.confirmed:
                self._send_confirmation(sub)
                n += 1
        return n

    # -- verification ----------------------------------------------------------------------------
    def _status_since(self, since: float | None) -> str:
        mode = self.config.verify
        if mode in ("immediate", "dns"):  # dns: what the DNS verifier does not judge (email identities)
            return "SUCCESS"
        if mode == "never":
            return "PENDING"
        if mode == "failed":
            return "FAILED"
        assert isinstance(mode, float)
        if since is not None and time.time() >= since + mode:
            return "SUCCESS"
        return "PENDING"

    def identity_status(self, ident: Identity) -> str:
        if ident.status_override:
            return ident.status_override
        if self.dns_verifier is not None and ident.type == "DOMAIN":
            return self.dns_verifier.dkim_status(ident)
        return self._status_since(ident.created_at)

    def mail_from_status(self, ident: Identity) -> str | None:
        if not ident.mail_from_domain:
            return None
        if ident.mail_from_status_override:
            return ident.mail_from_status_override
        if self.dns_verifier is not None:
            return self.dns_verifier.mail_from_status(ident)
        return self._status_since(ident.mail_from_set_at)

    def _get_identity(self, name: str) -> Identity:
        ident = self.state.identities.get(name.lower())
        if ident is None:
            raise not_found(f"Email identity {name} does not exist.")
        return ident

    def _identity_arn(self, ident: Identity) -> str:
        return f"arn:aws:ses:{self.config.region}:{self.config.account_id}:identity/{ident.name}"

    def _dkim_attributes(self, ident: Identity) -> dict[str, Any]:
        if ident.type == "EMAIL_ADDRESS":
            return {
                "SigningEnabled": False,
                "Status": "NOT_STARTED",
                "Tokens": [],
                "SigningAttributesOrigin": "AWS_SES",
            }
        attrs: dict[str, Any] = {
            "SigningEnabled": ident.dkim_signing_enabled,
            "Status": self.identity_status(ident),
            "Tokens": list(ident.dkim_tokens),
            "SigningAttributesOrigin": ident.dkim_origin,
        }
        if ident.dkim_origin == "AWS_SES":
            attrs["NextSigningKeyLength"] = ident.next_signing_key_length or "RSA_2048_BIT"
            attrs["CurrentSigningKeyLength"] = ident.current_signing_key_length or "RSA_2048_BIT"
            attrs["LastKeyGenerationTimestamp"] = ident.created_at
        return attrs

    # -- identities ------------------------------------------------------------------------------
    def create_email_identity(self, data: dict[str, Any]) -> dict[str, Any]:
        raw_name = _require_str(data, "EmailIdentity").strip()
        key = raw_name.lower()
        if key in self.state.identities:
            raise already_exists(f"Email identity {raw_name} already exists.")
        if "@" in raw_name:
            addr = bare_address(raw_name)
            if addr != raw_name or not _DOMAIN_RE.match(addr.rpartition("@")[2].lower()):
                raise bad_request(f"Invalid email address <{raw_name}>.")
            ident = Identity(name=raw_name, type="EMAIL_ADDRESS", created_at=time.time(), dkim_signing_enabled=False)
        else:
            if not _DOMAIN_RE.match(key):
                raise bad_request(f"Invalid domain name {raw_name}.")
            ident = Identity(name=key, type="DOMAIN", created_at=time.time())
            dkim = data.get("DkimSigningAttributes") or {}
            if not isinstance(dkim, dict):
                raise bad_request("DkimSigningAttributes must be an object.")
            if dkim.get("DomainSigningSelector") or dkim.get("DomainSigningPrivateKey"):
                selector = dkim.get("DomainSigningSelector")
                if not selector or not dkim.get("DomainSigningPrivateKey"):
                    raise bad_request("DomainSigningSelector and DomainSigningPrivateKey are both required.")
                ident.dkim_origin = "EXTERNAL"
                ident.dkim_selector = str(selector)
                ident.dkim_tokens = [str(selector)]
            else:
                length = dkim.get("NextSigningKeyLength") or "RSA_2048_BIT"
                if length not in ("RSA_1024_BIT", "RSA_2048_BIT"):
                    raise bad_request(f"Invalid NextSigningKeyLength {length}.")
                ident.next_signing_key_length = length
                ident.current_signing_key_length = length
                ident.dkim_tokens = [_dkim_token() for _ in range(3)]
        cs_name = data.get("ConfigurationSetName")
        if cs_name:
            if cs_name not in self.state.configuration_sets:
                raise not_found(f"Configuration set <{cs_name}> does not exist.")
            ident.configuration_set = cs_name
        ident.tags = list(data.get("Tags") or [])
        self.state.identities[ident.name.lower()] = ident
        self._save()
        return {
            "IdentityType": ident.type,
            "VerifiedForSendingStatus": self.identity_status(ident) == "SUCCESS",
            "DkimAttributes": self._dkim_attributes(ident),
        }

    def get_email_identity(self, name: str) -> dict[str, Any]:
        self.identity_reads[name.lower()] += 1
        ident = self._get_identity(name)
        status = self.identity_status(ident)
        mail_from: dict[str, Any] = {"BehaviorOnMxFailure": ident.mail_from_behavior}
        if ident.mail_from_domain:
            mail_from = {
                "MailFromDomain": ident.mail_from_domain,
                "MailFromDomainStatus": self.mail_from_status(ident),
                "BehaviorOnMxFailure": ident.mail_from_behavior,
            }
        out: dict[str, Any] = {
            "IdentityType": ident.type,
            "FeedbackForwardingStatus": True,
            "VerifiedForSendingStatus": status == "SUCCESS",
            "DkimAttributes": self._dkim_attributes(ident),
            "MailFromAttributes": mail_from,
            "Policies": {},
            "Tags": list(ident.tags),
            "VerificationStatus": status,
        }
        if ident.configuration_set:
            out["ConfigurationSetName"] = ident.configuration_set
        return out

    def delete_email_identity(self, name: str) -> None:
        ident = self._get_identity(name)
        del self.state.identities[ident.name.lower()]
        self._save()

    def list_email_identities(self, data: dict[str, Any]) -> dict[str, Any]:
        items = [
            {
                "IdentityType": i.type,
                "IdentityName": i.name,
                "SendingEnabled": True,
                "VerificationStatus": self.identity_status(i),
            }
            for i in sorted(self.state.identities.values(), key=lambda i: i.name)
        ]
        return self._paginate(items, data, "EmailIdentities")

    def put_mail_from(self, name: str, data: dict[str, Any]) -> None:
        ident = self._get_identity(name)
        domain = (data.get("MailFromDomain") or "").strip().lower()
        behavior = data.get("BehaviorOnMxFailure") or "USE_DEFAULT_VALUE"
        if behavior not in ("USE_DEFAULT_VALUE", "REJECT_MESSAGE"):
            raise bad_request(f"Invalid BehaviorOnMxFailure {behavior}.")
        if domain:
            parent = ident.name.rpartition("@")[2].lower()
            if not _DOMAIN_RE.match(domain) or not domain.endswith("." + parent):
                raise bad_request(f"MAIL FROM domain {domain} must be a subdomain of {parent}.")
            if domain != ident.mail_from_domain:
                ident.mail_from_set_at = time.time()
                ident.mail_from_status_override = None
            ident.mail_from_domain = domain
        else:
            ident.mail_from_domain = None
            ident.mail_from_set_at = None
            ident.mail_from_status_override = None
        ident.mail_from_behavior = behavior
        self._save()

    def put_dkim_attributes(self, name: str, data: dict[str, Any]) -> None:
        ident = self._get_identity(name)
        ident.dkim_signing_enabled = bool(data.get("SigningEnabled", False))
        self._save()

    def set_identity_status(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        """Inspection API: force VerificationStatus / MailFromDomainStatus (null = back to the mode)."""
        ident = self._get_identity(name)
        for key, attr in (("status", "status_override"), ("mail_from_status", "mail_from_status_override")):
            if key in data:
                value = data[key]
                if value is not None and value not in VERIFICATION_STATUSES:
                    raise bad_request(f"{key} must be one of {', '.join(VERIFICATION_STATUSES)} or null.")
                setattr(ident, attr, value)
        self._save()
        return self.identity_json(ident)

    def identity_json(self, ident: Identity) -> dict[str, Any]:
        return {
            "identity": ident.name,
            "type": ident.type,
            "verification_status": self.identity_status(ident),
            "verified_for_sending": self.identity_status(ident) == "SUCCESS",
            "dkim_signing_enabled": ident.dkim_signing_enabled,
            "dkim_origin": ident.dkim_origin,
            "dkim_tokens": list(ident.dkim_tokens),
            "mail_from_domain": ident.mail_from_domain,
            "mail_from_status": self.mail_from_status(ident),
            "mail_from_behavior": ident.mail_from_behavior,
            "configuration_set": ident.configuration_set,
            "status_override": ident.status_override,
            "created_at": iso_ms(ident.created_at),
        }

    def _verified_identity_for(self, address: str) -> Identity | None:
        """The verified identity that allows sending from ``address`` (address, domain or parent)."""
        addr = address.lower()
        ident = self.state.identities.get(addr)
        if ident is not None and self.identity_status(ident) == "SUCCESS":
            return ident
        domain = addr.rpartition("@")[2]
        labels = domain.split(".")
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:])
            ident = self.state.identities.get(candidate)
            if ident is not None:
                # The most specific domain identity decides (SES does not fall back to a parent
                # domain when the subdomain itself is an identity).
                return ident if self.identity_status(ident) == "SUCCESS" else None
        return None

    # -- configuration sets ---------------------------------------------------------------------
    def _get_cs(self, name: str) -> ConfigurationSet:
        cs = self.state.configuration_sets.get(name)
        if cs is None:
            raise not_found(f"Configuration set <{name}> does not exist.")
        return cs

    def create_configuration_set(self, data: dict[str, Any]) -> None:
        name = _require_str(data, "ConfigurationSetName")
        if not _NAME_RE.match(name):
            raise bad_request(
                "Configuration set name must contain only ASCII letters, numbers, underscores and dashes "
                "(1-64 characters)."
            )
        if name in self.state.configuration_sets:
            raise already_exists(f"Configuration set <{name}> already exists.")
        options = {k: data[k] for k in _OPTION_KEYS if data.get(k) is not None}
        self.state.configuration_sets[name] = ConfigurationSet(
            name=name, created_at=time.time(), options=options, tags=list(data.get("Tags") or [])
        )
        self._save()

    def get_configuration_set(self, name: str) -> dict[str, Any]:
        cs = self._get_cs(name)
        out: dict[str, Any] = {
            "ConfigurationSetName": cs.name,
            "DeliveryOptions": {"TlsPolicy": "OPTIONAL"},
            "ReputationOptions": {"ReputationMetricsEnabled": False},
            "SendingOptions": {"SendingEnabled": True},
        }
        out.update(cs.options)
        out["Tags"] = list(cs.tags)
        return out

    def delete_configuration_set(self, name: str) -> None:
        self._get_cs(name)
        del self.state.configuration_sets[name]
        for ident in self.state.identities.values():
            if ident.configuration_set == name:
                ident.configuration_set = None
        self._save()

    def list_configuration_sets(self, data: dict[str, Any]) -> dict[str, Any]:
        return self._paginate(sorted(self.state.configuration_sets), data, "ConfigurationSets")

    def _destination_from(self, name: str, definition: Any) -> dict[str, Any]:
        if not isinstance(definition, dict):
            raise bad_request("EventDestination is required.")
        kinds = [k for k in _DEST_KINDS if definition.get(k)]
        if len(kinds) != 1:
            raise bad_request("Exactly one destination type must be specified.")
        types = _string_list(definition.get("MatchingEventTypes"), "MatchingEventTypes")
        if not types:
            raise bad_request("MatchingEventTypes must contain at least one event type.")
        for t in types:
            if t not in EVENT_TYPE_NAMES:
                raise bad_request(f"Invalid event type {t}.")
        if kinds[0] == "SnsDestination":
            topic = definition["SnsDestination"].get("TopicArn")
            if not isinstance(topic, str) or not _SNS_ARN_RE.match(topic):
                raise bad_request(f"Invalid SNS topic ARN {topic}.")
        dest: dict[str, Any] = {
            "Name": name,
            "Enabled": bool(definition.get("Enabled", False)),
            "MatchingEventTypes": list(dict.fromkeys(types)),
        }
        dest[kinds[0]] = definition[kinds[0]]
        return dest

    def create_event_destination(self, cs_name: str, data: dict[str, Any]) -> None:
        cs = self._get_cs(cs_name)
        name = _require_str(data, "EventDestinationName")
        if not _NAME_RE.match(name):
            raise bad_request(
                "Event destination name must contain only ASCII letters, numbers, underscores and dashes."
            )
        if name in cs.event_destinations:
            raise already_exists(f"Event destination {name} already exists in configuration set <{cs_name}>.")
        dest = self._destination_from(name, data.get("EventDestination"))
        cs.event_destinations[name] = dest
        self._save()
        if "SnsDestination" in dest:
            self._destination_added(dest["SnsDestination"]["TopicArn"])
            self._save()

    def update_event_destination(self, cs_name: str, name: str, data: dict[str, Any]) -> None:
        cs = self._get_cs(cs_name)
        if name not in cs.event_destinations:
            raise not_found(f"Event destination {name} does not exist in configuration set <{cs_name}>.")
        old_topic = (cs.event_destinations[name].get("SnsDestination") or {}).get("TopicArn")
        dest = self._destination_from(name, data.get("EventDestination"))
        cs.event_destinations[name] = dest
        self._save()
        topic = (dest.get("SnsDestination") or {}).get("TopicArn")
        if topic and topic != old_topic:
            self._destination_added(topic)
            self._save()

    def delete_event_destination(self, cs_name: str, name: str) -> None:
        cs = self._get_cs(cs_name)
        if name not in cs.event_destinations:
            raise not_found(f"Event destination {name} does not exist in configuration set <{cs_name}>.")
        del cs.event_destinations[name]
        self._save()

    def get_event_destinations(self, cs_name: str) -> dict[str, Any]:
        cs = self._get_cs(cs_name)
        return {"EventDestinations": [dict(d) for d in cs.event_destinations.values()]}

    # -- account -----------------------------------------------------------------------------------
    def sent_last_24_hours(self) -> int:
        cutoff = time.time() - 86400
        while self._send_times and self._send_times[0] < cutoff:
            self._send_times.popleft()
        return len(self._send_times)

    def send_times(self) -> list[float]:
        """issue 23: the (epoch) time of every accepted send in the last 24 hours, oldest first."""
        self.sent_last_24_hours()
        return list(self._send_times)

    def get_account(self) -> dict[str, Any]:
        return {
            "DedicatedIpAutoWarmupEnabled": False,
            "EnforcementStatus": "HEALTHY",
            "ProductionAccessEnabled": True,
            "SendQuota": {
                "Max24HourSend": self.limits.max_24_hour_send,
                "MaxSendRate": self.limits.max_send_rate,
                "SentLast24Hours": float(self.sent_last_24_hours()),
            },
            "SendingEnabled": True,
            "SuppressionAttributes": {"SuppressedReasons": []},
        }

    # -- sending -----------------------------------------------------------------------------------
    def _check_rate(self) -> None:
        if not self.config.enforce_send_rate:
            return
        now = time.monotonic()
        while self._rate_window and self._rate_window[0] <= now - 1.0:
            self._rate_window.popleft()
        if len(self._rate_window) >= self.limits.max_send_rate:
            raise SesError("TooManyRequestsException", "Maximum sending rate exceeded.")
        if self.sent_last_24_hours() >= self.limits.max_24_hour_send:
            raise SesError("LimitExceededException", "Daily message quota exceeded.")
        self._rate_window.append(now)

    def send_email(self, data: dict[str, Any], source_ip: str) -> dict[str, Any]:
        content = data.get("Content")
        if not isinstance(content, dict) or not content:
            raise bad_request("Content is required.")
        dest = data.get("Destination") or {}
        if not isinstance(dest, dict):
            raise bad_request("Destination must be an object.")
        to = _string_list(dest.get("ToAddresses"), "ToAddresses")
        cc = _string_list(dest.get("CcAddresses"), "CcAddresses")
        bcc = _string_list(dest.get("BccAddresses"), "BccAddresses")
        from_field = data.get("FromEmailAddress")
        if from_field is not None and not isinstance(from_field, str):
            raise bad_request("FromEmailAddress must be a string.")

        if "Raw" in content and content["Raw"] is not None:
            try:
                raw = base64.b64decode(_require_str(content["Raw"], "Data"), validate=True)
            except (binascii.Error, ValueError):
                raise bad_request("Raw message data must be base64-encoded.") from None
        elif "Simple" in content and content["Simple"] is not None:
            if not from_field:
                raise bad_request("FromEmailAddress is required for Simple content.")
            reply_to = _string_list(data.get("ReplyToAddresses"), "ReplyToAddresses")
            raw = build_simple(from_field, to, cc, reply_to, content["Simple"])
        elif "Template" in content:
            raise bad_request("The SES emulator does not support Template content; use Raw or Simple.")
        else:
            raise bad_request("Content must contain Raw or Simple.")

        if len(raw) > MAX_MESSAGE_BYTES:
            raise message_rejected(f"Message length is more than {MAX_MESSAGE_BYTES} bytes long.")
        parsed = parse_raw(raw)
        source = from_field or parsed.get("From")
        if not source:
            raise bad_request("Missing required header 'From'.")
        from_addr = bare_address(source)
        if not from_addr or "@" not in from_addr:
            raise message_rejected(f"Illegal address: {source}")
        if not (to or cc or bcc):
            to = bare_addresses(parsed.get_all("To"))
            cc = bare_addresses(parsed.get_all("Cc"))
            bcc = bare_addresses(parsed.get_all("Bcc"))
        destination = [bare_address(a) or a for a in [*to, *cc, *bcc]]
        if not destination:
            raise bad_request("Missing recipients: no Destination and no To/Cc/Bcc headers.")
        if len(destination) > MAX_RECIPIENTS:
            raise message_rejected(f"Recipient count exceeds {MAX_RECIPIENTS}.")
        for addr in destination:
            if "@" not in addr:
                raise message_rejected(f"Illegal address: {addr}")

        tags: dict[str, str] = {}
        for tag in data.get("EmailTags") or []:
            name, value = tag.get("Name"), tag.get("Value")
            if not isinstance(name, str) or not _TAG_RE.match(name) or name.startswith("ses:"):
                raise bad_request(f"Invalid tag name <{name}>: only ASCII letters, numbers, '_' and '-' are allowed.")
            if not isinstance(value, str) or not _TAG_RE.match(value):
                raise bad_request(f"Invalid tag value <{value}>: only ASCII letters, numbers, '_' and '-' are allowed.")
            tags[name] = value

        cs_name = data.get("ConfigurationSetName")
        cs: ConfigurationSet | None = None
        ident = self._verified_identity_for(from_addr)
        if cs_name:
            cs = self._get_cs(cs_name)
        elif ident is not None and ident.configuration_set:
            cs = self.state.configuration_sets.get(ident.configuration_set)
        if ident is None:
            raise message_rejected(
                "Email address is not verified. The following identities failed the check in region "
                f"{self.config.region.upper()}: {from_addr}"
            )
        if cs is not None and not cs.sending_enabled:
            raise SesError("SendingPausedException", f"Sending is paused for configuration set <{cs.name}>.")
        self.limits.before_send()
        self._check_rate()

        now = time.time()
        message_id = ses_message_id(now, self.config.region)
        subject = parsed.get("Subject")
        self.sent.append(
            SentMessage(
                message_id=message_id,
                from_=source,
                destinations=destination,
                configuration_set=cs.name if cs else None,
                tags=dict(tags),
                subject=None if subject is None else decode_words(subject),
                raw=raw,
                timestamp=now,
                source_ip=source_ip,
            )
        )
        self._send_times.append(now)
        if cs is not None:
            self._publish_events(cs, ident, source, from_addr, destination, parsed, tags, source_ip, now, message_id)
        return {"MessageId": message_id}

    def _publish_events(
        self,
        cs: ConfigurationSet,
        ident: Identity,
        source: str,
        from_addr: str,
        destination: list[str],
        parsed: ParsedMessage,
        tags: dict[str, str],
        source_ip: str,
        now: float,
        message_id: str,
    ) -> None:
        dests = [d for d in cs.event_destinations.values() if d.get("Enabled") and d.get("SnsDestination")]
        if not dests:
            return
        all_tags: dict[str, list[str]] = {
            "ses:operation": ["SendEmail"],
            "ses:configuration-set": [cs.name],
            "ses:source-ip": [source_ip],
            "ses:from-domain": [from_addr.rpartition("@")[2].lower()],
            "ses:caller-identity": ["root"],
        }
        for k, v in tags.items():
            all_tags[k] = [v]
        ctx = MailContext(
            timestamp=now,
            source=source,
            source_arn=self._identity_arn(ident),
            account_id=self.config.account_id,
            message_id=message_id,
            destination=destination,
            parsed=parsed,
            tags=all_tags,
        )
        self._publish_records(dests, message_id, build_records(ctx, self.config.region))

    def _publish_records(
        self, dests: list[dict[str, Any]], message_id: str, records: list[dict[str, Any]]
    ) -> list[str]:
        """Publish SES event records (signed SNS notifications) to every enabled SNS destination
        whose MatchingEventTypes has them; returns the SNS message ids published."""
        published_ids: list[str] = []
        # one ordered job per subscription
        jobs: dict[str, list[OutboundMessage]] = {}
        skipped: list[OutboundMessage] = []
        for record in records:
            event_key = EVENT_TYPE_KEYS[record["eventType"]]
            message = json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"
            for dest in dests:
                if event_key not in dest["MatchingEventTypes"]:
                    continue
                topic = dest["SnsDestination"]["TopicArn"]
                sns_id = str(uuid.uuid4())
                published_ids.append(sns_id)
                published = time.time()
                for sub in self._subs_for(topic):
                    out = self.publisher.notification(
                        sub,
                        message,
                        subject=EVENT_SUBJECT,
                        sns_message_id=sns_id,
                        timestamp=published,
                        event_type=record["eventType"],
                        ses_message_id=message_id,
                    )
                    if sub.confirmed or not self.config.require_confirmation:
                        jobs.setdefault(sub.subscription_arn, []).append(out)
                    else:
                        skipped.append(out)
        for out in skipped:
            self.publisher.skipped(out, "subscription not confirmed")
        for messages in jobs.values():
            self.publisher.submit(messages)
        return published_ids

    def fire_engagement(self, message_id: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """Publish an SES Open (`kind` "open"), Click ("click") or Subscription ("subscription": an
        unsubscribe-all opt-out) event for a sent message, as SES does when a recipient loads the
        tracking pixel, follows a tracked link or unsubscribes. Body (all optional): ip_address,
        user_agent; for a click link and link_tags; for a subscription recipient (one of the
        destinations; default all) and contact_list. Published only where the message's
        configuration set has an SNS destination matching OPEN / CLICK / SUBSCRIPTION (as in
        SES, where tracking is per configuration set); the answer lists what was published."""
        sent = next((m for m in reversed(self.sent) if m.message_id == message_id), None)
        if sent is None:
            raise not_found(f"No sent message with MessageId {message_id}.")
        ip = data.get("ip_address", "192.0.2.1")
        user_agent = data.get("user_agent", "Mozilla/5.0 (ses-emulator)")
        if not isinstance(ip, str) or not isinstance(user_agent, str):
            raise bad_request("ip_address and user_agent must be strings.")
        now = time.time()
        recipient: str | None = None
        detail: dict[str, Any] = {"ipAddress": ip, "timestamp": iso_ms(now), "userAgent": user_agent}
        if kind == "click":
            link = data.get("link", "https://example.com/")
            link_tags = data.get("link_tags", {})
            if not isinstance(link, str) or not link:
                raise bad_request("link must be a non-empty string.")
            if not isinstance(link_tags, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
                for k, v in link_tags.items()
            ):
                raise bad_request("link_tags must be an object of string lists.")
            detail = {**detail, "link": link, "linkTags": link_tags}
        elif kind == "subscription":
            chosen = data.get("recipient")
            if chosen is not None and (not isinstance(chosen, str) or chosen not in sent.destinations):
                raise bad_request("recipient must be one of the message's destinations.")
            recipient = chosen
            detail = {
                "contactList": str(data.get("contact_list", "mailroom")),
                "timestamp": iso_ms(now),
                "source": "UnsubscribeHeader",
                "newTopicPreferences": {"unsubscribeAll": True, "topicSubscriptionStatus": []},
                "oldTopicPreferences": {"unsubscribeAll": False, "topicSubscriptionStatus": []},
            }
        elif kind != "open":
            raise bad_request(f"Unknown engagement event {kind!r}: open, click or subscription.")
        cs = self.state.configuration_sets.get(sent.configuration_set) if sent.configuration_set else None
        from_addr = bare_address(sent.from_) or sent.from_
        ident = self._verified_identity_for(from_addr)
        dests = (
            [d for d in cs.event_destinations.values() if d.get("Enabled") and d.get("SnsDestination")] if cs else []
        )
        ids: list[str] = []
        if cs is not None and ident is not None and dests:
            all_tags: dict[str, list[str]] = {
                "ses:operation": ["SendEmail"],
                "ses:configuration-set": [cs.name],
                "ses:source-ip": [sent.source_ip],
                "ses:from-domain": [from_addr.rpartition("@")[2].lower()],
                "ses:caller-identity": ["root"],
                **{k: [v] for k, v in sent.tags.items()},
            }
            ctx = MailContext(
                timestamp=sent.timestamp,
                source=sent.from_,
                source_arn=self._identity_arn(ident),
                account_id=self.config.account_id,
                message_id=sent.message_id,
                destination=[recipient] if kind == "subscription" and recipient else list(sent.destinations),
                parsed=parse_raw(sent.raw),
                tags=all_tags,
            )
            ids = self._publish_records(
                dests, message_id, [{"eventType": _ENGAGEMENT[kind], "mail": mail_object(ctx), kind: detail}]
            )
        return {"message_id": message_id, "event_type": _ENGAGEMENT[kind], "sns_message_ids": ids}

    # -- helpers -----------------------------------------------------------------------------------
    @staticmethod
    def _paginate(items: list[Any], data: dict[str, Any], key: str) -> dict[str, Any]:
        try:
            start = int(data.get("NextToken") or 0)
            size = int(data.get("PageSize") or 1000)
        except (TypeError, ValueError):
            raise SesError("BadRequestException", "Invalid NextToken or PageSize.") from None
        page = items[start : start + size]
        out: dict[str, Any] = {key: page}
        if start + size < len(items):
            out["NextToken"] = str(start + size)
        return out

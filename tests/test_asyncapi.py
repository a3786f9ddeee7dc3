"""docs/asyncapi.yaml is what tools/asyncapi.py generates from libs/contracts today (regenerate with
`make asyncapi`), it is a valid AsyncAPI 3 document (the asyncapi3 object model, plus every $ref
resolving), it covers every event type and stream of the contracts, and real encoded events and
dead letters validate against the payload schemas it publishes."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import yaml
from mailroom_contracts import dead_letters, encode, events, streams

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "asyncapi.yaml"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("mailroom_asyncapi_tool", ROOT / "tools" / "asyncapi.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


asyncapi = _generator()


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOC.read_text())
    return loaded


def test_checked_in_document_is_what_the_contracts_generate() -> None:
    assert DOC.read_text() == asyncapi.render(), "docs/asyncapi.yaml drifted from libs/contracts: run `make asyncapi`"
    assert asyncapi.main(["--check"]) == 0


def test_check_mode_fails_on_a_stale_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "asyncapi.yaml"
    stale.write_text(DOC.read_text().replace("email.bounced", "email.bounce", 1))
    monkeypatch.setattr(asyncapi, "OUTPUT", stale)
    assert asyncapi.main(["--check"]) == 1
    assert asyncapi.main([]) == 0
    assert stale.read_text() == DOC.read_text()


def test_is_a_valid_asyncapi_3_document(doc: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the model's own pydantic field-shadowing warnings
        from asyncapi3 import AsyncAPI3

        AsyncAPI3.model_validate(doc)
    assert doc["asyncapi"] == "3.0.0"

    def resolve(ref: str) -> Any:
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"unresolvable $ref {ref}"
            node = node[part]
        return node

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    for op_id, operation in doc["operations"].items():
        channel = resolve(operation["channel"]["$ref"])
        for message in operation["messages"]:
            # AsyncAPI 3: an operation's messages must be ones of its channel.
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/"), op_id
            assert message["$ref"].rsplit("/", 1)[1] in channel["messages"], op_id


def test_covers_every_event_type_and_stream(doc: dict[str, Any]) -> None:
    by_name = {m["name"]: m for m in doc["components"]["messages"].values()}
    for kind in events.ALL_EVENT_TYPES:
        tag = str(kind.__struct_config__.tag)
        assert tag in by_name, f"{tag} is missing from the AsyncAPI document"
    addresses = {c["address"] for c in doc["channels"].values()}
    assert "mailroom.email.queued" in addresses and "mailroom.dlq.{durable}" in addresses
    assert [s["name"] for s in doc["x-jetstream"]["streams"]] == [s.name for s in streams.STREAMS]
    assert doc["channels"]["dead_letters"]["parameters"]["durable"]["enum"] == [c.durable for c in streams.CONSUMERS]


def _validator(doc: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    schema = {**doc["components"]["schemas"][name], "components": doc["components"]}
    return jsonschema.Draft202012Validator(schema)


def test_real_events_validate_against_the_published_schemas(doc: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    sent = events.EmailSent(
        event_id="evt_1", occurred_at=now, tenant_id="ten_1", email_id="msg_1", provider="ses", provider_message_id="x"
    )
    queued = events.EmailQueued(
        event_id="evt_2",
        occurred_at=now,
        tenant_id="ten_1",
        email_id="msg_1",
        from_=events.Address(email="a@example.test", name="A"),
        to=[events.Address(email="b@example.test")],
        subject="Hi",
        html="<p>hi</p>",
        tags={"k": "v"},
        created_at=now,
    )
    letter = dead_letters.DeadLetter(
        consumer="sender-queued",
        stream="MAILROOM_EMAIL",
        stream_seq=7,
        subject="mailroom.email.queued",
        payload=encode(queued),
        deliveries=120,
        reason="exhausted",
        error="boom",
        dead_lettered_at=now,
    )
    for name, obj in (("EmailSent", sent), ("EmailQueued", queued), ("DeadLetter", letter)):
        _validator(doc, name).validate(msgspec.json.decode(encode(obj)))
    wrong = msgspec.json.decode(encode(sent))
    wrong["provider"] = "smtp"
    assert list(_validator(doc, "EmailSent").iter_errors(wrong)), "the schema must reject what the contract rejects"

"""State persistence across restarts, bursts, configuration from the environment, the module command."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError
from mailroom_ses_emulator.config import ConfigError, EmulatorConfig, SnsSubscriptionConfig
from ses_emulator_testkit import (
    TOPIC,
    SnsReceiver,
    StartEmulator,
    raw_mime,
    ses_client,
    setup_events,
    wait_for,
)


def test_state_persists_across_restart(start_emulator: StartEmulator, receiver: SnsReceiver, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = start_emulator(state_dir=state)
    ses = ses_client(first.url)
    setup_events(ses, receiver)
    ses.put_email_identity_mail_from_attributes(EmailIdentity="example.com", MailFromDomain="bounce.example.com")
    ses.create_email_identity(EmailIdentity="ops@other.org")
    before = ses.get_email_identity(EmailIdentity="example.com")
    cert_url = receiver.validations()[0].body["SigningCertURL"]
    cert = httpx.get(cert_url).content
    port = first.port
    first.stop()
    assert (state / "state.json").exists()
    assert (state / "sns-signing-key.pem").exists() and (state / "sns-signing-cert.pem").exists()

    second = start_emulator(state_dir=state, port=port)
    ses = ses_client(second.url)
    after = ses.get_email_identity(EmailIdentity="example.com")
    assert after["DkimAttributes"]["Tokens"] == before["DkimAttributes"]["Tokens"]
    assert after["MailFromAttributes"] == before["MailFromAttributes"]
    assert ses.get_email_identity(EmailIdentity="ops@other.org")["IdentityType"] == "EMAIL_ADDRESS"
    assert ses.get_configuration_set(ConfigurationSetName="mailroom")["ConfigurationSetName"] == "mailroom"
    dests = ses.get_configuration_set_event_destinations(ConfigurationSetName="mailroom")["EventDestinations"]
    assert dests[0]["SnsDestination"]["TopicArn"] == TOPIC
    subs = httpx.get(f"{second.url}/_emulator/subscriptions").json()["subscriptions"]
    assert subs[0]["confirmed"] is True
    with pytest.raises(ClientError):
        ses.create_configuration_set(ConfigurationSetName="mailroom")

    mid = ses.send_email(Content={"Raw": {"Data": raw_mime()}}, ConfigurationSetName="mailroom")["MessageId"]
    wait_for(lambda: receiver.event_types(mid) == ["Send", "Delivery"])
    event = next(
        m for m in receiver.of_type("Notification") if (m.record or {}).get("mail", {}).get("messageId") == mid
    )
    assert event.body["SigningCertURL"] == cert_url
    assert httpx.get(cert_url).content == cert
    # confirmed subscriptions are not asked again
    assert len(receiver.of_type("SubscriptionConfirmation")) == 1


def test_unconfirmed_subscription_is_asked_again_at_start(
    start_emulator: StartEmulator, receiver: SnsReceiver, tmp_path: Path
) -> None:
    receiver.auto_confirm = False
    first = start_emulator(state_dir=tmp_path)
    setup_events(ses_client(first.url), receiver, wait_confirmed=False)
    wait_for(lambda: len(receiver.of_type("SubscriptionConfirmation")) == 1)
    first.stop()

    second = start_emulator(state_dir=tmp_path)
    wait_for(lambda: len(receiver.of_type("SubscriptionConfirmation")) == 2, what="second confirmation")
    confs = receiver.of_type("SubscriptionConfirmation")
    assert confs[0].body["Token"] == confs[1].body["Token"]
    assert confs[1].body["SubscribeURL"].startswith(second.url)
    assert httpx.get(confs[1].body["SubscribeURL"]).status_code == 200
    wait_for(receiver.validations)


def test_burst_of_sends_all_notified(start_emulator: StartEmulator, receiver: SnsReceiver) -> None:
    srv = start_emulator()
    ses = ses_client(srv.url)
    setup_events(ses, receiver)
    n = 200
    started = time.monotonic()

    def send(i: int) -> str:
        resp = ses.send_email(
            Destination={"ToAddresses": ["success@simulator.amazonses.com"]},
            Content={"Raw": {"Data": raw_mime(subject=f"burst {i}")}},
            ConfigurationSetName="mailroom",
            EmailTags=[{"Name": "mailroom_email_id", "Value": f"em_{i}"}],
        )
        return str(resp["MessageId"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = list(pool.map(send, range(n)))
    send_seconds = time.monotonic() - started
    assert len(set(ids)) == n

    def delivered() -> bool:
        return len([r for r in receiver.events() if r["eventType"] in ("Send", "Delivery")]) >= 2 * n

    wait_for(delivered, timeout=20, what=f"{2 * n} notifications")
    for i, mid in enumerate(ids):
        assert receiver.event_types(mid) == ["Send", "Delivery"], mid
        assert receiver.events(mid)[0]["mail"]["tags"]["mailroom_email_id"] == [f"em_{i}"]
    assert send_seconds < 15
    assert ses.get_account()["SendQuota"]["SentLast24Hours"] == n


def test_config_from_env() -> None:
    cfg = EmulatorConfig.from_env(
        {
            "SES_EMULATOR_HOST": "0.0.0.0",
            "SES_EMULATOR_PORT": "4599",
            "SES_EMULATOR_REGION": "eu-west-1",
            "SES_EMULATOR_ACCOUNT_ID": "123456789012",
            "SES_EMULATOR_VERIFY": "2.5",
            "SES_EMULATOR_SNS_SUBSCRIPTIONS": f"{TOPIC}=http://127.0.0.1:8101/ses/sns, "
            "arn:aws:sns:us-east-1:000000000000:other=https://example.test/hook",
            "SES_EMULATOR_STATE_DIR": "/tmp/x",
            "SES_EMULATOR_MAX_SEND_RATE": "14",
            "SES_EMULATOR_REQUIRE_CONFIRMATION": "false",
            "SES_EMULATOR_MAX_SENT_KEPT": "250000",
        }
    )
    assert cfg.port == 4599 and cfg.region == "eu-west-1" and cfg.account_id == "123456789012"
    assert cfg.verify == 2.5
    assert cfg.sns_subscriptions == (
        SnsSubscriptionConfig(TOPIC, "http://127.0.0.1:8101/ses/sns"),
        SnsSubscriptionConfig("arn:aws:sns:us-east-1:000000000000:other", "https://example.test/hook"),
    )
    assert cfg.state_dir == Path("/tmp/x")
    assert cfg.max_send_rate == 14 and cfg.require_confirmation is False
    assert cfg.max_sent_kept == 250000
    assert cfg.base_url == "http://127.0.0.1:4599"
    assert EmulatorConfig.from_env({"SES_EMULATOR_PUBLIC_URL": "http://emu:1/"}).base_url == "http://emu:1"
    defaults = EmulatorConfig.from_env({})
    assert (defaults.host, defaults.port, defaults.verify, defaults.max_send_rate) == (
        "127.0.0.1",
        4566,
        "immediate",
        200.0,
    )
    for bad in (
        {"SES_EMULATOR_VERIFY": "sometimes"},
        {"SES_EMULATOR_SNS_SUBSCRIPTIONS": "not-an-arn=http://x"},
        {"SES_EMULATOR_SNS_SUBSCRIPTIONS": f"{TOPIC}"},
        {"SES_EMULATOR_REQUIRE_CONFIRMATION": "maybe"},
    ):
        with pytest.raises(ConfigError):
            EmulatorConfig.from_env(bad)


def test_module_command_runs_and_stops_on_sigterm(tmp_path: Path, receiver: SnsReceiver) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SES_EMULATOR_")},
        "SES_EMULATOR_PORT": "0",
        "SES_EMULATOR_STATE_DIR": str(tmp_path),
        "SES_EMULATOR_SNS_SUBSCRIPTIONS": f"{TOPIC}={receiver.url}",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailroom_ses_emulator"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for out_line in stdout:
            lines.put(out_line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        line = lines.get(timeout=20)
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        url = match.group(1)
        assert httpx.get(f"{url}/health").status_code == 200
        ses = ses_client(url)
        ses.create_email_identity(EmailIdentity="example.com")
        setup = ses.get_email_identity(EmailIdentity="example.com")
        assert setup["VerifiedForSendingStatus"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "state.json").exists()

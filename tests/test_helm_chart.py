"""The Helm chart deploy/helm/mailroom checked by Helm's own engine (helm-python-sdk: Helm's Go SDK
in-process, no cluster, no binary): `helm lint --strict` and a render for the default values and
each realistic values file in ci/; every rendered manifest validated by kubernetes-validate against
a current Kubernetes; the invariants every install must keep (probes, resources, non-root, read-only
root filesystem, the migrations hook Job, real environment variable names, the per-schema URLs);
every MAILROOM_* setting a service reads (derived from its settings class and the variables its code
names) reaches its Deployment through a named value, and what the chart renders is what the service
parses; tracing by the standard OTEL_* variables; and the values schema: it covers every value,
every value is commented, and it rejects bad ones."""

from __future__ import annotations

import ast
import functools
import gzip
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import msgspec
import opentelemetry.environment_variables
import opentelemetry.sdk.environment_variables
import pytest
import yaml
from cryptography.fernet import Fernet
from mailroom_api.settings import ApiSettings
from mailroom_contracts.streams import STREAMS
from mailroom_domains.settings import DomainsSettings
from mailroom_events.settings import EventsSettings
from mailroom_kit import tracing
from mailroom_kit.settings import BaseSettings
from mailroom_sender.settings import SenderSettings
from mailroom_webhooks.settings import WebhooksSettings
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "mailroom"
KUBE_VERSION = kubernetes_validate.latest_version()  # the newest Kubernetes the validator knows
SERVICES = ("api", "domains", "events", "sender", "webhooks")
SETTINGS: dict[str, type[BaseSettings]] = {
    "api": ApiSettings,
    "sender": SenderSettings,
    "events": EventsSettings,
    "domains": DomainsSettings,
    "webhooks": WebhooksSettings,
}
CASES = ["default", *sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))]
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
# The values file that sets every value naming an environment variable (ci/every-setting-values.yaml).
EVERY = "every-setting"
# The MAILROOM_* variables services read that no chart value sets, each for its reason. Everything
# else a service reads must reach its Deployment through a named value (test below).
NOT_IN_CHART = {
    "MAILROOM_EVENTS_SNS_CERT_HOST_PATTERN": "the SES emulator's certificate host (tests); production keeps AWS's",
    "MAILROOM_EVENTS_SNS_ALLOW_HTTP": "http:// certificate and subscribe URLs: the SES emulator only",
    "MAILROOM_WEBHOOKS_ALLOW_HTTP": "http:// endpoint URLs: development only",
    "MAILROOM_TRACES_FILE": "the jsonl exporter's file (dev and tests); the schema refuses tracing.exporter jsonl",
    "MAILROOM_OPERATOR_TOKEN": "the SPEC's alias of MAILROOM_API_OPERATOR_TOKEN, which the chart sets (and which wins)",
    "MAILROOM_PARENT_PID": "set by the API's parent process for its copies (MAILROOM_API_PROCESSES > 1)",
    "MAILROOM_PROCESS_INDEX": "the same (the chart runs one process per pod: MAILROOM_API_PROCESSES=1)",
}
# What the chart takes from a Secret, for parsing the rendered environment as the services would.
SECRET_VALUES = {
    "MAILROOM_DATABASE_URL": "postgresql://mailroom:pw@db:5432/mailroom?sslmode=require",
    "MAILROOM_WEBHOOKS_SECRET_KEY": Fernet.generate_key().decode(),
    "MAILROOM_API_OPERATOR_TOKEN": "op-token",
    "MAILROOM_API_UNSUBSCRIBE_SECRET": "u" * 32,
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20abc",
}
ENV_NAME = re.compile(r"MAILROOM_[A-Z0-9_]*[A-Z0-9]")
# The OTEL_* variables OpenTelemetry's API and SDK define (what `tracing.configure` and the exporter read).
OTEL_NAMES = {
    value
    for module in (opentelemetry.environment_variables, opentelemetry.sdk.environment_variables)
    for name, value in vars(module).items()
    if name.startswith("OTEL_") and isinstance(value, str)
}


def values_of(case: str) -> dict[str, Any]:
    if case == "default":
        return {}
    return yaml.safe_load((CHART / "ci" / f"{case}-values.yaml").read_text()) or {}


@functools.cache
def chart() -> helm.Chart:
    return helm.Chart.load(str(CHART))


@functools.cache
def rendered(case: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    """(template, manifest) of every document a fresh install renders, hooks included."""
    out = chart().render(values_of(case) or None, name="mr", namespace="mail", is_install=True)
    docs: list[tuple[str, dict[str, Any]]] = []
    for template, text in out.items():
        if template.endswith("NOTES.txt"):
            continue
        docs.extend((template, doc) for doc in yaml.safe_load_all(text) if doc)
    return tuple(docs)


def of_kind(case: str, kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in rendered(case) if doc["kind"] == kind]


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def real_env_names() -> set[str]:
    names: set[str] = set()
    for cls in SETTINGS.values():
        names.update(cls.env_name(field) for field in cls.__struct_fields__)
    return names


def names_in_code(src: Path) -> set[str]:
    """Every string constant of the sources under src that is a whole MAILROOM_* name: a variable
    read straight from the environment (not through a settings class), an alias, or a setting's
    name in a message; stream names are not variables."""
    names: set[str] = set()
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ENV_NAME.fullmatch(node.value):
                names.add(node.value)
    return names - {stream.name for stream in STREAMS}


@functools.cache
def env_read_by(service: str) -> frozenset[str]:
    """The MAILROOM_* variables `service` reads: its settings class's fields (shared ones included)
    and any name its own code or the kit spells out."""
    settings = SETTINGS[service]
    fields = {settings.env_name(field) for field in settings.__struct_fields__}
    return frozenset(fields | names_in_code(REPO / "services" / service / "src") | names_in_code(REPO / "libs/kit/src"))


def deployment_of(case: str, service: str) -> dict[str, Any]:
    [deployment] = [
        d for d in of_kind(case, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == service
    ]
    return deployment


def env_of(case: str, service: str) -> dict[str, dict[str, Any]]:
    return container_env(deployment_of(case, service)["spec"]["template"]["spec"]["containers"][0])


def environ_of(case: str, service: str) -> dict[str, str]:
    """The environment the service's container starts with (Secrets filled in with valid values)."""
    return {
        name: var["value"] if "value" in var else SECRET_VALUES[name] for name, var in env_of(case, service).items()
    }


def test_cases_are_the_default_and_three_realistic_files() -> None:
    assert {"default", "minimal", "ha-production", "per-schema-roles", EVERY} <= set(CASES)


@pytest.mark.parametrize("service", SERVICES)
def test_every_setting_a_service_reads_has_a_named_chart_value(service: str) -> None:
    """Rendered with ci/every-setting-values.yaml (which uses no services.<svc>.env), each service's
    Deployment sets every MAILROOM_* variable the service reads, but for the NOT_IN_CHART ones. A new
    setting without a chart value (values.yaml, values.schema.json, the template) fails here."""
    assert not any(svc.get("env") for svc in values_of(EVERY).get("services", {}).values())
    missing = env_read_by(service) - set(env_of(EVERY, service)) - set(NOT_IN_CHART)
    assert not missing, f"{service} reads {sorted(missing)}: no chart value sets them (or add them to NOT_IN_CHART)"


def test_the_allow_list_names_only_settings_a_service_reads() -> None:
    read = set().union(*(env_read_by(service) for service in SERVICES))
    assert set(NOT_IN_CHART) <= read, set(NOT_IN_CHART) - read
    for case in CASES:
        for service in SERVICES:
            assert not set(NOT_IN_CHART) & set(env_of(case, service)), (case, service)


@pytest.mark.parametrize("case", CASES)
def test_what_the_chart_renders_is_what_the_services_accept(case: str) -> None:
    """Each Deployment's (and migration container's) environment passes its service's own settings
    checks and the tracing checks, exactly as the process does at start (a badly formatted number
    would stop it)."""
    for service in SERVICES:
        environ = environ_of(case, service)
        SETTINGS[service].from_env(environ)
        tracing.check(environ)
    [job] = of_kind(case, "Job")  # `mailroom-<svc> migrate` reads its settings first, too
    for container in job["spec"]["template"]["spec"]["containers"]:
        service = container["name"].removeprefix("migrate-")
        environ = {n: v["value"] if "value" in v else SECRET_VALUES[n] for n, v in container_env(container).items()}
        SETTINGS[service].from_env(environ)
        tracing.check(environ)


ENV_OR_OTEL = re.compile(r"(MAILROOM_(?:<SVC>_)?[A-Z0-9_]*[A-Z0-9]|OTEL_[A-Z_]*[A-Z])")


def _schema_leaves(schema: dict[str, Any]) -> dict[str, tuple[dict[str, Any], str]]:
    """dotted path → (schema node, the nearest description naming a variable: its own or an
    enclosing object's) of every value under a closed object (free-form ones count as one)."""
    out: dict[str, tuple[dict[str, Any], str]] = {}

    def walk(node: dict[str, Any], path: str, named: str) -> None:
        node = _resolve(schema, node)
        if ENV_OR_OTEL.match(node.get("description", "")):
            named = node["description"]
        if path:
            out[path] = (node, named)
        if node.get("type") == "object" and node.get("additionalProperties") is False:
            for key, child in node["properties"].items():
                walk(child, f"{path}.{key}".lstrip("."), named)

    walk(schema, "", "")
    return out


def _get(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise KeyError(path)
        node = node[key]
    return node


def _as_env(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(_as_env(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_setting_value_sets_the_variable_its_description_names() -> None:
    """Each value whose description starts with a variable's name (values.schema.json) is set in
    ci/every-setting-values.yaml, and each service reading that variable gets exactly that value
    (or, for an existingSecret/key pair, that Secret's key)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    every = values_of(EVERY)
    checked = 0
    for path, (node, named) in _schema_leaves(schema).items():
        m = ENV_OR_OTEL.match(named)
        if not m or node.get("type") == "object":
            continue
        var, parent, key = m.group(1), path.rpartition(".")[0], path.rpartition(".")[2]
        try:
            value = _get(every, path)
        except KeyError:
            raise AssertionError(f"{EVERY}-values.yaml does not set {path} ({var})") from None
        if path.startswith("services."):  # MAILROOM_<SVC>_…: that service's own
            targets = [path.split(".")[1]]
            var = var.replace("<SVC>", targets[0].upper())
        elif var == "OTEL_SERVICE_NAME":  # one value per service
            targets = [key]
        elif var.startswith("OTEL_"):
            targets = list(SERVICES)
        else:
            targets = [s for s in SERVICES if var in env_read_by(s)]
        assert targets, f"{path}: no service reads {var}"
        for service in targets:
            env = env_of(EVERY, service)
            assert var in env, f"{path}: {service} does not get {var}"
            if key in ("existingSecret", "key"):
                ref = env[var]["valueFrom"]["secretKeyRef"]
                assert ref == {"name": _get(every, f"{parent}.existingSecret"), "key": _get(every, f"{parent}.key")}, (
                    path
                )
            else:
                assert env[var]["value"] == _as_env(value), (path, var, env[var]["value"], value)
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("case", CASES)
def test_helm_lint_strict(case: str) -> None:
    report = helm.lint(str(CHART), values_of(case) or None, strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("case", CASES)
def test_every_manifest_is_valid_kubernetes(case: str) -> None:
    kinds = set()
    for template, doc in rendered(case):
        kinds.add(doc["kind"])
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            assert doc["spec"]["endpoints"][0]["path"] == "/metrics", template
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(
                f"{template} {doc['kind']}/{doc['metadata']['name']}: {str(exc).splitlines()[0]}"
            ) from None
    assert {"Deployment", "Service", "Job", "ServiceAccount"} <= kinds


@pytest.mark.parametrize("case", CASES)
def test_every_deployment_is_probed_bounded_and_unprivileged(case: str) -> None:
    deployments = of_kind(case, "Deployment")
    assert sorted(d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments) == list(SERVICES)
    for deployment in deployments:
        name = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        assert pod["automountServiceAccountToken"] is False
        [container] = pod["containers"]
        assert container["command"] == [f"mailroom-{name}", "run"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
        assert container["resources"]["limits"]["memory"]
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
        env = container_env(container)
        assert env[f"MAILROOM_{name.upper()}_PORT"]["value"] == "8000"
        assert env[f"MAILROOM_{name.upper()}_HOST"]["value"] == "0.0.0.0"
        assert "secretKeyRef" in env["MAILROOM_DATABASE_URL"]["valueFrom"]
        assert env["MAILROOM_NATS_REPLICAS"]["value"] == str(values_of(case).get("nats", {}).get("streamReplicas", 3))


@pytest.mark.parametrize("case", CASES)
def test_env_names_are_the_services_real_settings(case: str) -> None:
    real = real_env_names()
    for deployment in of_kind(case, "Deployment"):
        name = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        settings = SETTINGS[name]
        own = {settings.env_name(field) for field in settings.__struct_fields__}
        for var in container_env(deployment["spec"]["template"]["spec"]["containers"][0]):
            if var.startswith("AWS_"):
                assert name in ("sender", "domains"), (name, var)
                continue
            if var.startswith("OTEL_"):
                assert var in OTEL_NAMES, f"{name}: {var} is no OpenTelemetry variable"
                continue
            assert var in own, f"{name}: {var} is not one of its settings ({sorted(own)})"
            assert var in real
    webhooks = next(d for d in of_kind(case, "Deployment") if d["metadata"]["name"].endswith("-webhooks"))
    env = container_env(webhooks["spec"]["template"]["spec"]["containers"][0])
    assert "secretKeyRef" in env["MAILROOM_WEBHOOKS_SECRET_KEY"]["valueFrom"], "the Fernet key comes from a Secret"


@pytest.mark.parametrize("case", CASES)
def test_migrations_run_as_a_pre_install_pre_upgrade_hook(case: str) -> None:
    [job] = of_kind(case, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert "serviceAccountName" not in pod, "hooks run before the chart's ServiceAccount exists"
    commands = sorted(c["command"] for c in pod["containers"])
    assert commands == [[f"mailroom-{svc}", "migrate"] for svc in SERVICES]
    for container in pod["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["runAsNonRoot"] is True
    # A hook is not part of the release's manifest: nothing else may depend on it existing.
    assert not any(d["kind"] == "Job" for d in of_kind(case, "Deployment"))


def test_per_schema_roles_give_every_service_and_its_migration_its_own_url() -> None:
    case = "per-schema-roles"
    expected = {svc: f"{svc}-url" for svc in SERVICES}
    for deployment in of_kind(case, "Deployment"):
        name = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        ref = container_env(deployment["spec"]["template"]["spec"]["containers"][0])["MAILROOM_DATABASE_URL"]
        assert ref["valueFrom"]["secretKeyRef"] == {"name": "mailroom-postgres-roles", "key": expected[name]}
    [job] = of_kind(case, "Job")
    for container in job["spec"]["template"]["spec"]["containers"]:
        svc = container["name"].removeprefix("migrate-")
        ref = container_env(container)["MAILROOM_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "mailroom-postgres-roles", "key": expected[svc]}
    [account] = of_kind(case, "ServiceAccount")
    assert account["metadata"]["name"] == "mailroom-ses"
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def test_default_install_exposes_nothing_and_shares_one_url() -> None:
    assert not of_kind("default", "Ingress") and not of_kind("default", "HorizontalPodAutoscaler")
    assert not of_kind("default", "NetworkPolicy") and not of_kind("default", "ServiceMonitor")
    keys = {
        container_env(d["spec"]["template"]["spec"]["containers"][0])["MAILROOM_DATABASE_URL"]["valueFrom"][
            "secretKeyRef"
        ]["key"]
        for d in of_kind("default", "Deployment")
    }
    assert keys == {"database-url"}
    assert {p["metadata"]["name"] for p in of_kind("default", "PodDisruptionBudget")} == {
        f"mr-mailroom-{svc}" for svc in ("api", "events", "sender", "webhooks")
    }, "domains runs one replica by default: no PDB that would block a drain"
    api = next(d for d in of_kind("default", "Deployment") if d["metadata"]["name"] == "mr-mailroom-api")
    env = container_env(api["spec"]["template"]["spec"]["containers"][0])
    assert "MAILROOM_API_UNSUBSCRIBE_SECRET" not in env and "MAILROOM_API_PUBLIC_URL" not in env, "broadcast off"


def test_minimal_uses_a_static_credentials_secret_for_ses_only() -> None:
    for deployment in of_kind("minimal", "Deployment"):
        name = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        env = container_env(deployment["spec"]["template"]["spec"]["containers"][0])
        if name in ("sender", "domains"):
            assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "mailroom-aws"
            assert env["MAILROOM_AWS_REGION"]["value"] == "eu-west-1"
        else:
            assert "AWS_ACCESS_KEY_ID" not in env
        assert deployment["spec"]["replicas"] == 1
    [ingress] = of_kind("minimal", "Ingress")
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "sns.mail.example.com"
    assert rule["http"]["paths"][0]["path"] == "/ses/sns"
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "mr-mailroom-events"
    assert not of_kind("minimal", "PodDisruptionBudget")


def test_ha_production_autoscales_isolates_and_is_scraped() -> None:
    case = "ha-production"
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(case, "HorizontalPodAutoscaler")}
    assert hpas == {"mr-mailroom-api", "mr-mailroom-sender", "mr-mailroom-webhooks"}
    for deployment in of_kind(case, "Deployment"):
        autoscaled = deployment["metadata"]["name"] in hpas
        assert ("replicas" in deployment["spec"]) is not autoscaled, "the HPA owns replicas"
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert "@sha256:" in image
    assert len(of_kind(case, "NetworkPolicy")) == len(SERVICES)
    policies = {p["metadata"]["name"]: p for p in of_kind(case, "NetworkPolicy")}
    assert len(policies["mr-mailroom-api"]["spec"]["ingress"]) == 2, "ingress controller and metrics"
    assert len(policies["mr-mailroom-sender"]["spec"]["ingress"]) == 1, "metrics only"
    [monitor] = of_kind(case, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    ingresses = {i["metadata"]["name"]: i for i in of_kind(case, "Ingress")}
    assert set(ingresses) == {"mr-mailroom-api", "mr-mailroom-events"}
    [api_rule] = ingresses["mr-mailroom-api"]["spec"]["rules"]
    routed = {p["path"] for p in api_rule["http"]["paths"]}
    assert routed == {"/v1", "/schema"}, "the API's /metrics, /ready and the operator API stay internal"
    assert all(i["spec"]["tls"][0]["secretName"] for i in ingresses.values())
    api = next(d for d in of_kind(case, "Deployment") if d["metadata"]["name"] == "mr-mailroom-api")
    env = container_env(api["spec"]["template"]["spec"]["containers"][0])
    assert env["MAILROOM_API_OPERATOR_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "mailroom-operator"
    # the broadcast stream: the unsubscribe key from a Secret, the links' public URL
    assert env["MAILROOM_API_UNSUBSCRIBE_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "mailroom-unsubscribe",
        "key": "unsubscribe-secret",
    }
    assert env["MAILROOM_API_PUBLIC_URL"]["value"] == "https://api.mail.example.com"
    sender = next(d for d in of_kind(case, "Deployment") if d["metadata"]["name"] == "mr-mailroom-sender")
    sender_env = container_env(sender["spec"]["template"]["spec"]["containers"][0])
    assert sender_env["MAILROOM_SENDER_BROADCAST_CONFIGURATION_SET"]["value"] == "mailroom-broadcast"


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver: keeps each POST's path, headers and decoded body."""

    received: list[tuple[str, dict[str, str], ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.received.append((self.path, headers, ExportTraceServiceRequest.FromString(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    _Collector.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("service", SERVICES)
def test_tracing_exports_by_the_standard_variables_the_chart_sets(
    service: str, collector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ha-production traces over OTLP/HTTP: the chart's OTEL_* variables (headers from a Secret, gzip,
    the per-service name, the ratio sampler) given to the real SDK export a continued trace, with
    them, to a collector (here a local one: only the endpoint is replaced)."""
    env = env_of("ha-production", service)
    assert env["OTEL_TRACES_EXPORTER"]["value"] == "otlp"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector.observability:4318"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "http/protobuf"
    assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"] == {"name": "mailroom-otlp", "key": "headers"}
    assert env["OTEL_SERVICE_NAME"]["value"] == f"mailroom-{service}"
    assert env["OTEL_TRACES_SAMPLER"]["value"] == "parentbased_traceidratio"
    for name, value in environ_of("ha-production", service).items():
        if name.startswith("OTEL_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        assert tracing.configure(service)
        # a sampled parent: parentbased_traceidratio keeps its children whatever the ratio
        with tracing.http_span("POST", "/v1/emails", [(b"traceparent", f"00-{trace_id}-00f067aa0ba902b7-01".encode())]):
            pass
    finally:
        tracing.shutdown()  # flushes the batch to the collector
    [(path, headers, request)] = _Collector.received
    assert path == "/v1/traces"
    assert headers["authorization"] == "Bearer abc" and headers["content-encoding"] == "gzip"
    [spans] = request.resource_spans
    resource = {a.key: a.value.string_value for a in spans.resource.attributes}
    assert resource["service.name"] == f"mailroom-{service}"
    assert resource["deployment.environment"] == "production"
    [span] = [s for scope in spans.scope_spans for s in scope.spans]
    assert span.trace_id.hex() == trace_id and span.name == "POST /v1/emails"


def test_jsonl_tracing_is_not_for_the_chart() -> None:
    """The file exporter writes one file per pod that nothing collects: the schema refuses it."""
    with pytest.raises(helm.HelmValuesError) as rejected:
        chart().validate_schema(chart().merge_values({"tracing": {"exporter": "jsonl"}}))
    assert "/tracing/exporter" in str(rejected.value)


def test_notes_tell_the_next_steps() -> None:
    notes = chart().render(values_of("minimal"), name="mr", namespace="mail", is_install=True)[
        "mailroom/templates/NOTES.txt"
    ]
    assert "https://sns.mail.example.com/ses/sns" in notes
    assert "mailroom admin tenants create" in notes and "mailroom admin api-keys create" in notes


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"services": {"api": {"replicas": -1}}}, "/services/api/replicas"),  # a negative replica count
        ({"replicaCount": 2}, "'replicaCount' not allowed"),  # an unknown top-level key
        ({"services": {"sender": {"replica": 2}}}, "'replica' not allowed"),  # a misspelt key in a service
        ({"services": {"queue": {"replicas": 1}}}, "'queue' not allowed"),  # a service that does not exist
        ({"nats": {"streamReplicas": 0}}, "/nats/streamReplicas"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "/securityContext/readOnlyRootFilesystem"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),  # root
        ({"postgres": {"existingSecret": ""}}, "/postgres/existingSecret"),  # no Postgres Secret
        ({"log": {"level": "verbose"}}, "/log/level"),
        ({"events": {"snsTopicArns": ["not-an-arn"]}}, "/events/snsTopicArns/0"),
        ({"api": {"broadcast": {"publicUrl": "http://mail.example.com"}}}, "/api/broadcast/publicUrl"),  # not https
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as rejected:
        chart().validate_schema(chart().merge_values(values))
    assert where in str(rejected.value), str(rejected.value)
    with pytest.raises(helm.HelmError):  # an install or upgrade with them fails the same way
        chart().render(values, name="mr", namespace="mail", is_install=True)


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    return schema["$defs"][ref.rsplit("/", 1)[1]] if ref else node


def test_schema_covers_and_describes_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        node = _resolve(schema, node)
        assert node.get("description") or path == "", f"{path}: no description in the schema"
        if isinstance(value, dict) and node.get("additionalProperties") is False:
            assert set(value) == set(node["properties"]), f"{path}: values.yaml and the schema differ"
            for key, child in value.items():
                walk(child, node["properties"][key], f"{path}.{key}".lstrip("."))

    walk(defaults, {**schema, "description": ""}, "")


def test_every_value_is_commented() -> None:
    """Each key of values.yaml whose parent the schema closes has a comment line right above it
    (the free-form Kubernetes objects under it, such as resources, are documented as a whole)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        node: dict[str, Any] | None = schema
        for _, parent in stack:
            node = _resolve(schema, node["properties"][parent]) if node and "properties" in node else None
        stack.append((indent, key))
        if node is None or node.get("additionalProperties") is not False:
            continue
        above = lines[number - 1].strip() if number else ""
        assert above.startswith("#"), f"values.yaml line {number + 1}: {key!r} has no comment above it"


def _values_comments() -> dict[str, str]:
    """dotted path → the comment lines right above that key in values.yaml, joined."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        above: list[str] = []
        for previous in reversed(lines[:number]):
            if not previous.strip().startswith("#"):
                break
            above.insert(0, previous.strip().lstrip("#").strip().removeprefix("-- "))
        out[".".join(k for _, k in stack)] = " ".join(above)
    return out


def _default_of(var: str) -> Any:
    for settings in SETTINGS.values():
        for field in msgspec.structs.fields(settings):
            if settings.env_name(field.name) == var:
                return field.default
    raise AssertionError(f"no service has {var}")


def test_a_value_left_unset_documents_the_services_own_default() -> None:
    """A value whose default is ~ leaves the service's own default; its comment says which
    ("~ = 600"), and that is the default in the settings class."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    comments = _values_comments()
    unset = 0
    for path, (node, named) in _schema_leaves(schema).items():
        m = ENV_OR_OTEL.match(named)
        if not m or node.get("type") == "object" or _get(defaults, path) is not None:
            continue
        var = m.group(1).replace("<SVC>", path.split(".")[1].upper() if path.startswith("services.") else "")
        said = re.search(r"~ = (.+?)(?: \([^)]*\))?\.$", comments[path])
        assert said, f"values.yaml {path}: the comment does not say the default (~ = …): {comments[path]!r}"
        documented, actual = yaml.safe_load(said.group(1)), _default_of(var)
        assert _as_env(documented) == _as_env(actual), (
            f"{path}: documented ~ = {documented!r}, {var} defaults to {actual!r}"
        )
        unset += 1
    assert unset > 40


@pytest.mark.parametrize(
    "values",
    [
        {"services": {"api": {"env": {"MAILROOM_API_PROCESSES": "4"}}}},  # fixed: one process per pod
        {"services": {"sender": {"env": {"MAILROOM_SENDER_CONCURRENCY": "4"}}}, "sender": {"concurrency": 8}},
        {"services": {"events": {"env": {"MAILROOM_NATS_URL": "nats://elsewhere:4222"}}}},
    ],
)
def test_extra_env_cannot_set_what_the_chart_sets(values: dict[str, Any]) -> None:
    """A variable in services.<svc>.env that the chart also sets would appear twice (the last one
    silently winning): the render fails, naming it."""
    [(service, env)] = [(s, v["env"]) for s, v in values["services"].items()]
    [var] = env
    with pytest.raises(helm.HelmError) as refused:
        chart().render(values, name="mr", namespace="mail", is_install=True)
    assert f"services.{service}.env.{var}: the chart sets {var} itself" in str(refused.value)


def test_extra_env_adds_what_the_chart_does_not_set() -> None:
    values = {
        "services": {
            "sender": {"env": {"MAILROOM_SENDER_CONCURRENCY": "4", "OTEL_EXPORTER_OTLP_TIMEOUT": "5000"}},
            "webhooks": {"env": {"MAILROOM_WEBHOOKS_ALLOW_HTTP": "true"}},  # NOT_IN_CHART: allowed, at your risk
        }
    }
    out = chart().render(values, name="mr", namespace="mail", is_install=True)
    envs = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: container_env(
            d["spec"]["template"]["spec"]["containers"][0]
        )
        for d in yaml.safe_load_all(out["mailroom/templates/deployment.yaml"])
        if d
    }
    assert (
        envs["sender"]["MAILROOM_SENDER_CONCURRENCY"]["value"] == "4"
    )  # sender.concurrency is ~: not set by the chart
    assert envs["sender"]["OTEL_EXPORTER_OTLP_TIMEOUT"]["value"] == "5000"
    assert envs["webhooks"]["MAILROOM_WEBHOOKS_ALLOW_HTTP"]["value"] == "true"

"""The container image without a Docker engine: the build stage of deploy/docker/Dockerfile is
replayed here line by line (its ARG, ENV, WORKDIR, COPY with .dockerignore, and RUN `uv …` lines,
read from the Dockerfile itself so they cannot drift), with the image's /app mapped to a temporary
directory. Then every service's console script from that venv migrates a fresh database and serves
`/health` and `/ready` on its own NATS server; the venv holds no dev, devstack or emulator package;
and the runtime stage is checked for what it must be (non-root, nothing but /app from the build)."""

from __future__ import annotations

import fnmatch
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet
from mailroom_devstack.infra import NatsServer, Postgres, free_port
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
SERVICES = ("api", "sender", "events", "domains", "webhooks")
# Only these may be installed in the image: the production closure of the five services.
FORBIDDEN = (
    "pytest",
    "mypy",
    "ruff",
    "schemathesis",
    "boto3",
    "mailroom_devstack",
    "mailroom_ses_emulator",
    "pgserver",
)


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Dockerfile → global ARGs and stages (line continuations joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "a continued line at the end of the Dockerfile"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(base=substitute(words[0], args), name=name))
        elif keyword == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append(Instruction(keyword, rest.strip()))
    return args, stages


def substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: values.get(m.group(1), m.group(0)), text)


def env_pairs(args: str) -> dict[str, str]:
    pairs = {}
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        assert sep, f"ENV {args!r}: use the KEY=value form"
        pairs[key] = value
    return pairs


def ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes for pattern in patterns)


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "exceptions are not replayed by this test"
    return [p[3:] if p.startswith("**/") else p for p in patterns] + [p for p in patterns if p.startswith("**/")]


def copy_into(src_rel: str, dest: Path, into_dir: bool, patterns: list[str]) -> None:
    source = ROOT / src_rel.rstrip("/")
    assert source.exists(), f"COPY {src_rel}: not in the repository"
    assert not ignored(src_rel.rstrip("/"), patterns), f"COPY {src_rel}: excluded by .dockerignore"
    if source.is_file():
        target = dest / source.name if into_dir else dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        return
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(ROOT).as_posix()
        if path.is_dir() or ignored(rel, patterns):
            continue
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


class Build:
    """The build stage replayed: container paths under / become paths under `root`."""

    def __init__(self, root: Path, args: dict[str, str]) -> None:
        self.root = root
        self.args = args
        self.workdir = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV", "MAILROOM_"))}
        # The image's Python is its base image's only one; here it is the one running the tests.
        self.env["UV_PYTHON"] = sys._base_executable  # type: ignore[attr-defined]
        self.ran: list[str] = []

    def host(self, container_path: str) -> Path:
        return (
            self.root / container_path.lstrip("/") if container_path.startswith("/") else self.workdir / container_path
        )

    def apply(self, ins: Instruction, patterns: list[str]) -> None:
        text = substitute(ins.args, {**self.args})
        if ins.keyword == "WORKDIR":
            self.workdir = self.host(text)
            self.workdir.mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "ENV":
            for key, value in env_pairs(text).items():
                self.env[key] = str(self.host(value)) if value.startswith("/app") else value
        elif ins.keyword == "COPY":
            words = text.split()
            if words[0].startswith("--from="):
                # uv itself: the test uses the uv that runs it (the Dockerfile pins its version).
                assert words[1:] == ["/uv", "/usr/local/bin/uv"], text
                return
            *sources, dest = words
            for src in sources:
                copy_into(src, self.host(dest), dest.endswith("/") or len(sources) > 1, patterns)
        elif ins.keyword == "RUN":
            command = re.sub(r"--mount=\S+\s+", "", text)
            assert command.startswith("uv "), f"RUN {command!r}: only `uv …` steps are replayable"
            self.ran.append(command)
            done = subprocess.run(
                shlex.split(command), cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        else:
            raise AssertionError(f"{ins.keyword} in the build stage: not replayable by this test")


def runtime_env(image: Path) -> dict[str, str]:
    """The runtime stage's ENV, with the image's /app mapped to `image`."""
    _, stages = parse(DOCKERFILE.read_text())
    env: dict[str, str] = {}
    for ins in stages[-1].instructions:
        if ins.keyword == "ENV":
            env.update(env_pairs(ins.args))
    env["PATH"] = env["PATH"].replace("/app", str(image), 1).replace("$PATH", os.environ.get("PATH", ""))
    return env


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """/app of the image (its venv at /app/.venv), built by the Dockerfile's own steps."""
    args, stages = parse(DOCKERFILE.read_text())
    build = next(s for s in stages if s.name == "build")
    root = tmp_path_factory.mktemp("image")
    builder = Build(root, args)
    patterns = dockerignore()
    for ins in build.instructions:
        builder.apply(ins, patterns)
    assert any("--no-dev" in cmd and "--frozen" in cmd for cmd in builder.ran), builder.ran
    yield root / "app"


def test_runtime_stage_is_non_root_and_carries_only_app(image: Path) -> None:
    _, stages = parse(DOCKERFILE.read_text())
    assert [s.name for s in stages] == ["uv", "build", "runtime"]
    runtime = stages[-1]
    assert runtime.base == stages[1].base, "the venv's interpreter is the base image's: same base"
    copies = [i.args for i in runtime.instructions if i.keyword == "COPY"]
    assert copies == ["--from=build --chown=root:root /app /app"], copies
    users = [i.args for i in runtime.instructions if i.keyword == "USER"]
    assert users and re.fullmatch(r"[1-9][0-9]{3,}:[1-9][0-9]{3,}", users[-1]), users
    runs = " ".join(i.args for i in runtime.instructions if i.keyword == "RUN")
    assert "apt-get" not in runs and "uv " not in runs and "pip" not in runs, runs
    env = {k: v for i in runtime.instructions if i.keyword == "ENV" for k, v in env_pairs(i.args).items()}
    assert env["PATH"].startswith("/app/.venv/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "read-only root filesystem: no bytecode written at run time"
    for svc in SERVICES:  # reachable from outside the container, on the port the chart probes
        assert env[f"MAILROOM_{svc.upper()}_HOST"] == "0.0.0.0"
        assert env[f"MAILROOM_{svc.upper()}_PORT"] == "8000"


def test_venv_holds_only_production_packages(image: Path) -> None:
    site = next((image / ".venv" / "lib").glob("python3*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.iterdir()}
    assert not [name for name in FORBIDDEN if name in installed], sorted(installed)
    for svc in SERVICES:
        assert (image / ".venv" / "bin" / f"mailroom-{svc}").exists()
    assert (image / ".venv" / "bin" / "mailroom").exists(), "the operator CLI"
    shipped = [*(image / "libs").rglob("*"), *(image / "services").rglob("*")]
    assert not [p for p in shipped if p.name in ("tests", "__pycache__")], "tests are not shipped (.dockerignore)"
    assert not (image / "tools").exists() or not list((image / "tools").rglob("*.py")), "no tool's code"
    assert (image / "services" / "api" / "migrations" / "0001_init.sql").exists()


def test_every_entrypoint_migrates_and_answers_health_and_ready(
    image: Path, tmp_path: Path, postgres: Postgres
) -> None:
    """With per-schema roles, as docs/operating.md sets them up: each service (and its migration)
    connects as its own role, which may only connect to the database and create its schema."""
    token = secrets.token_hex(4)
    dbname = f"mailroom_image_{token}"
    roles = {svc: f"mailroom_image_{token}_{svc}" for svc in SERVICES}
    nats = NatsServer(tmp_path / "nats").start()
    db_url = postgres.create_database(dbname)
    with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
        for role in roles.values():
            conn.execute(f'CREATE ROLE "{role}" LOGIN')
            conn.execute(f'GRANT CONNECT, CREATE ON DATABASE "{dbname}" TO "{role}"')
    urls = {svc: make_conninfo(db_url, user=role) for svc, role in roles.items()}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILROOM_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(runtime_env(image))  # the runtime stage's own ENV (PATH, listen address, log format …)
    env.update(
        {
            "MAILROOM_NATS_URL": nats.url,
            # Nothing listens there: starting needs no SES (the sender reaches it on its first send).
            "MAILROOM_SES_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
            "MAILROOM_WEBHOOKS_SECRET_KEY": Fernet.generate_key().decode(),
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
        }
    )
    before = sorted(image.rglob("*"))
    try:
        for svc in SERVICES:
            done = subprocess.run(
                [f"mailroom-{svc}", "migrate"],
                env={**env, "MAILROOM_DATABASE_URL": urls[svc]},
                cwd=image,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, (svc, done.stdout, done.stderr)
        with psycopg.connect(urls["api"]) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT count(*) FROM sender.schema_migrations")
        ports = {svc: free_port() for svc in SERVICES}
        for svc in SERVICES:
            svc_env = {
                **env,
                "MAILROOM_DATABASE_URL": urls[svc],
                # In the image all listen on 0.0.0.0:8000; here they share one host.
                f"MAILROOM_{svc.upper()}_PORT": str(ports[svc]),
            }
            log = (tmp_path / f"{svc}.log").open("wb")
            procs[svc] = subprocess.Popen([f"mailroom-{svc}", "run"], env=svc_env, cwd=image, stdout=log, stderr=log)
        deadline = time.monotonic() + 90
        pending = set(SERVICES)
        with httpx.Client(timeout=2) as client:
            while pending:
                for svc in sorted(pending):
                    proc = procs[svc]
                    assert proc.poll() is None, (svc, (tmp_path / f"{svc}.log").read_text()[-3000:])
                    try:
                        health = client.get(f"http://127.0.0.1:{ports[svc]}/health")
                        ready = client.get(f"http://127.0.0.1:{ports[svc]}/ready")
                    except httpx.TransportError:
                        continue
                    if health.status_code == 200 and ready.status_code == 200:
                        assert ready.json()["checks"] == {"nats": True, "postgres": True, "migrations": True}
                        pending.discard(svc)
                assert time.monotonic() < deadline, {s: (tmp_path / f"{s}.log").read_text()[-2000:] for s in pending}
                time.sleep(0.2)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        nats.stop()
        postgres.drop_database(dbname)
        with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
            for role in roles.values():
                conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    for svc, proc in procs.items():
        assert proc.returncode == 0, (svc, proc.returncode, (tmp_path / f"{svc}.log").read_text()[-2000:])
    assert sorted(image.rglob("*")) == before, "nothing is written to the image at run time (read-only root)"

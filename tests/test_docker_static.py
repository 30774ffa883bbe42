"""The Docker demo (docker/), checked without a Docker engine: none runs on our machines.

- Both compose files, interpolated the way compose does, validate against the Compose
  Specification's JSON schema (NOTE [ Where the compose schema comes from ]).
- Security: ports bound to loopback, the pre-shared key required, anonymous auth only in the opt-in
  override, a heap limit; a port beyond loopback only in the TLS override, with the engine's TLS
  settings (tests/test_tls.py serves over certificates made by the same make_tls_certs.sh).
- Everything the Dockerfile, the compose files and the application-mode config refer to exists,
  and the versions match the project's pins.
- The application-mode script compiles, and (slow) runs against the embedded server.
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import REPO, free_port, run_python

DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
TRAINER_DOCKERFILE = DOCKER / "trainer.Dockerfile"
COMPOSE = DOCKER / "docker-compose.yml"
ANONYMOUS = DOCKER / "docker-compose.anonymous.yml"
TLS = DOCKER / "docker-compose.tls.yml"
MAKE_CERTS = DOCKER / "make_tls_certs.sh"
ENV_EXAMPLE = DOCKER / ".env.example"
APP_DIR = DOCKER / "app.d"
APP_SCRIPT = APP_DIR / "dh_tf_demo_data.py"

ANONYMOUS_AUTH = "io.deephaven.auth.AnonymousAuthenticationHandler"
LOOPBACK = "127.0.0.1"
SAMPLE_ENV = {"DH_PSK": "sample-psk-1234"}  # what a user sets; DH_PORT / DH_HEAP take their defaults
TLS_ENV = {**SAMPLE_ENV, "DH_TLS_DIR": "./tls"}  # the TLS override's required directory too

# NOTE [ Where the compose schema comes from ]
# The Compose Specification's JSON schema ships inside the `docker-compose` 1.29.2 wheel on PyPI
# (compose/config/compose_spec.json). That distribution cannot be installed next to our
# dependencies (it pins PyYAML < 6 and jsonschema < 4), so it is not in requirements-dev.txt:
# `pip download --no-deps` fetches the wheel into the pytest cache, its sha256 is checked, and the
# schema is read from the zip without installing anything. Only when the download is impossible
# (no network) are the schema tests skipped, saying so.
SCHEMA_DIST = "docker-compose==1.29.2"
SCHEMA_WHEEL = "docker_compose-1.29.2-py2.py3-none-any.whl"
SCHEMA_WHEEL_SHA256 = "8d5589373b35c8d3b1c8c1182c6e4a4ff14bffa3dd0b605fcd08f73c94cef809"
SCHEMA_MEMBER = "compose/config/compose_spec.json"
# The schema's "$schema" names draft 2019-09 by a non-canonical URI (http://, trailing "#") that
# jsonschema does not recognize, so the draft is chosen here.
COMPOSE_VALIDATOR = jsonschema.Draft201909Validator


@pytest.fixture(scope="session")
def compose_schema(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The Compose Specification JSON schema (NOTE [ Where the compose schema comes from ])."""
    cache = getattr(request.config, "cache", None)  # absent under `-p no:cacheprovider`
    cache_dir = Path(cache.mkdir("compose-spec-wheel")) if cache else tmp_path_factory.mktemp("compose-spec-wheel")
    wheel = cache_dir / SCHEMA_WHEEL
    if not wheel.exists():
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "-d",
            str(cache_dir),
            SCHEMA_DIST,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"cannot download {SCHEMA_DIST} for the compose schema ({e!r})")
        if proc.returncode != 0 or not wheel.exists():
            pytest.skip(f"cannot download {SCHEMA_DIST} for the compose schema: {proc.stderr.strip()[-500:]}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != SCHEMA_WHEEL_SHA256:
        wheel.unlink()  # a bad download must not stick in the cache
        pytest.fail(f"{SCHEMA_WHEEL}: sha256 must be {SCHEMA_WHEEL_SHA256} (got {digest})")
    with zipfile.ZipFile(wheel) as zf:
        return json.loads(zf.read(SCHEMA_MEMBER))


# ---------------------------------------------------------------------------------------------
# Compose-style interpolation


class MissingVariable(ValueError):
    """A ``${VAR:?message}`` / ``${VAR?message}`` whose variable is unset (compose stops there)."""


_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate_str(text: str, env: dict[str, str]) -> str:
    """Substitutes ``$VAR``, ``${VAR}``, ``${VAR:-d}``, ``${VAR-d}``, ``${VAR:?m}``, ``${VAR?m}``,
    ``${VAR:+a}``, ``${VAR+a}`` and ``$$`` as compose does (no nesting)."""

    def substitute(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["named"]
        op, arg = m["op"], m["arg"] or ""
        value = env.get(name)
        unset_or_empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if unset_or_empty else value
        if op in (":?", "?"):
            if unset_or_empty:
                raise MissingVariable(f"required variable {name} is missing a value: {arg}")
            return value
        if op in (":+", "+"):
            return "" if unset_or_empty else arg
        return value or ""

    return _INTERPOLATION.sub(substitute, text)


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Interpolates every string value (not keys) of a loaded YAML document."""
    if isinstance(node, str):
        return interpolate_str(node, env)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    return node


def test_interpolation_follows_compose_rules():
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate_str("a${SET}b$SET $$SET", env) == "avbv $SET"
    assert interpolate_str("${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${SET:-d}", env) == "d d  v"
    assert interpolate_str("${SET:+alt}|${UNSET:+alt}", env) == "alt|"
    with pytest.raises(MissingVariable, match="EMPTY is missing a value: set it"):
        interpolate_str("${EMPTY:?set it}", env)
    assert interpolate_str("${EMPTY?set it}", env) == ""


# ---------------------------------------------------------------------------------------------
# Loading the compose files


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open() as f:
        return yaml.safe_load(f)


def compose_config(path: Path, env: dict[str, str] = SAMPLE_ENV) -> dict[str, Any]:
    """A compose file as compose sees it: parsed, then interpolated with ``env``."""
    return interpolate(load_yaml(path), env)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment``, in either of compose's two forms, as a dict."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``docker compose -f base -f override``, for the keys these files use: mappings merge key by
    key, ``environment`` by variable, ``ports`` append (compose then drops duplicates)."""
    out = dict(base)
    for key, value in override.items():
        if key == "environment":
            out[key] = {**environment(base), **environment(override)}
        elif key == "ports":
            out[key] = [*base.get("ports", []), *(p for p in value if p not in base.get("ports", []))]
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = merged(base[key], value)
        else:
            out[key] = value
    return out


def host_ip(port: Any) -> str | None:
    """The host address a ``ports`` entry binds; None means every interface."""
    if isinstance(port, dict):
        return port.get("host_ip")
    text = str(port).rsplit("/", 1)[0]  # drop /tcp
    if text.startswith("["):  # [::1]:10000:10000
        return text[1 : text.index("]")]
    parts = text.split(":")
    return parts[0] if len(parts) == 3 else None


def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return config.get("services") or {}


# ---------------------------------------------------------------------------------------------
# Schema validation


@pytest.mark.parametrize("path", [COMPOSE, ANONYMOUS, TLS], ids=lambda p: p.name)
def test_compose_file_validates_against_the_compose_spec(compose_schema, path):
    COMPOSE_VALIDATOR.check_schema(compose_schema)
    config = compose_config(path, TLS_ENV if path == TLS else SAMPLE_ENV)
    errors = sorted(COMPOSE_VALIDATOR(compose_schema).iter_errors(config), key=lambda e: e.path)
    assert not errors, "\n".join(f"{path.name}: {list(e.path)}: {e.message}" for e in errors)


def test_compose_schema_is_not_vacuous(compose_schema):
    """The schema we validate with does reject broken files (a wrong schema would pass anything)."""
    validator = COMPOSE_VALIDATOR(compose_schema)
    good = compose_config(COMPOSE)
    assert validator.is_valid(good)
    deephaven = services(good)["deephaven"]
    for bad_service in (
        {**deephaven, "portz": ["1:1"]},
        {**deephaven, "ports": {"10000": 10000}},
        {**deephaven, "build": {**deephaven["build"], "contxt": ".."}},
    ):
        assert not validator.is_valid({**good, "services": {"deephaven": bad_service}})


def compose_cli() -> list[str] | None:
    """``docker compose`` (v2 plugin) or ``docker-compose`` (v1), if either is installed; None if not."""
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        try:
            if subprocess.run([*cmd, "version"], capture_output=True, timeout=60).returncode == 0:
                return cmd
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def test_compose_cli_config_agrees_when_installed(tmp_path):
    """``compose config`` needs no Docker engine: where a compose CLI is installed, let it resolve both
    files (interpolation, the required DH_PSK, the override's merge) and check what it prints."""
    cli = compose_cli()
    if cli is None:
        pytest.skip("no docker compose / docker-compose CLI installed (the schema tests above still ran)")
    no_env_file = tmp_path / "empty.env"  # instead of a developer's docker/.env
    no_env_file.write_text("")

    def config(*files: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
        args = [arg for f in files for arg in ("-f", f.name)]
        # Neither our environment nor a docker/.env of a developer may leak into the check.
        clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("DH_", "COMPOSE_"))}
        return subprocess.run(
            [*cli, "--env-file", str(no_env_file), *args, "config"],
            cwd=DOCKER,
            env={**clean_env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    unset = config(COMPOSE, env={})
    assert unset.returncode != 0 and "DH_PSK" in unset.stdout + unset.stderr
    for files, auth in (
        ((COMPOSE,), f"-Dauthentication.psk={SAMPLE_ENV['DH_PSK']}"),
        ((COMPOSE, ANONYMOUS), f"-DAuthHandlers={ANONYMOUS_AUTH}"),
    ):
        proc = config(*files, env=SAMPLE_ENV)
        assert proc.returncode == 0, proc.stderr
        resolved = yaml.safe_load(proc.stdout)["services"]
        service = resolved["deephaven"]
        assert [host_ip(p) for p in service["ports"]] == [LOOPBACK], service["ports"]
        assert "ports" not in resolved["trainer"]
        opts = shlex.split(start_opts(service))
        assert auth in opts and "-Xmx4g" in opts
        assert (len(files) == 2) == any(ANONYMOUS_AUTH in opt for opt in opts)


# ---------------------------------------------------------------------------------------------
# Security properties


def start_opts(service: dict[str, Any]) -> str:
    opts = environment(service).get("START_OPTS")
    assert opts, "the service must set START_OPTS"
    return opts


def test_main_compose_requires_the_psk_and_binds_loopback():
    raw = load_yaml(COMPOSE)
    assert list(services(raw)) == ["deephaven", "trainer"]
    raw_opts = start_opts(services(raw)["deephaven"])
    assert "-Dauthentication.psk=${DH_PSK:?" in raw_opts  # required: compose stops when unset
    with pytest.raises(MissingVariable, match="DH_PSK"):
        compose_config(COMPOSE, env={})
    with pytest.raises(MissingVariable, match="DH_PSK"):
        compose_config(COMPOSE, env={"DH_PSK": ""})

    service = services(compose_config(COMPOSE))["deephaven"]
    opts = shlex.split(start_opts(service))
    assert f"-Dauthentication.psk={SAMPLE_ENV['DH_PSK']}" in opts
    assert not any(ANONYMOUS_AUTH in opt or opt.startswith("-DAuthHandlers") for opt in opts)
    assert "-Xmx4g" in opts  # the DH_HEAP default
    assert "-XX:SoftRefLRUPolicyMSPerMB=0" in opts  # as start_server sets it (NOTE [ Soft references ])
    assert "-Ddeephaven.application.dir=/app.d" in opts
    assert service["ports"] == [f"{LOOPBACK}:10000:10000"]
    custom = services(compose_config(COMPOSE, {**SAMPLE_ENV, "DH_PORT": "10123", "DH_HEAP": "8g"}))["deephaven"]
    assert custom["ports"] == [f"{LOOPBACK}:10123:10000"] and "-Xmx8g" in shlex.split(start_opts(custom))


@pytest.mark.parametrize("path", [COMPOSE, ANONYMOUS], ids=lambda p: p.name)
def test_every_published_port_binds_loopback(path):
    for name, service in services(compose_config(path)).items():
        for port in service.get("ports", []):
            assert host_ip(port) == LOOPBACK, f"{path.name}: service {name} publishes {port!r} beyond {LOOPBACK}"
        assert service.get("network_mode") != "host", f"{path.name}: service {name} uses the host network"


def test_anonymous_override_is_explicit_and_keeps_loopback():
    text = ANONYMOUS.read_text()
    assert "NO AUTHENTICATION" in text  # the loud warning
    override = services(compose_config(ANONYMOUS))["deephaven"]
    assert "ports" not in override, "the override must inherit the loopback binding, not publish ports"
    override_opts = shlex.split(start_opts(override))
    assert f"-DAuthHandlers={ANONYMOUS_AUTH}" in override_opts
    assert any(opt.startswith("-Xmx") for opt in override_opts)
    assert "-XX:SoftRefLRUPolicyMSPerMB=0" in override_opts

    effective = merged(services(compose_config(COMPOSE))["deephaven"], override)
    assert [host_ip(p) for p in effective["ports"]] == [LOOPBACK]
    assert shlex.split(start_opts(effective)) == override_opts
    assert "-Ddeephaven.application.dir=/app.d" in override_opts  # the demo still loads


def test_data_lives_on_a_named_volume():
    config = compose_config(COMPOSE)
    mounts = [
        v.split(":") if isinstance(v, str) else [v["source"], v["target"]]
        for v in services(config)["deephaven"]["volumes"]
    ]
    sources = [source for source, target, *_ in mounts if target == "/data"]
    assert len(sources) == 1 and sources[0] in (config.get("volumes") or {}), mounts


def test_env_example_documents_every_variable_the_compose_files_read():
    used = set()
    for path in (COMPOSE, ANONYMOUS, TLS):
        used |= {m["braced"] or m["named"] for m in _INTERPOLATION.finditer(path.read_text()) if not m["escaped"]}
    documented = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    assert used == {"DH_PSK", "DH_PORT", "DH_HEAP", "DH_TLS_DIR", "DH_TLS_BIND", "DH_TLS_PORT"}
    assert used <= documented, f".env.example lacks {sorted(used - documented)}"


# ---------------------------------------------------------------------------------------------
# References: everything the files name exists


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        pending += " " + stripped
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        keyword, _, args = pending.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def copy_sources(path: Path = DOCKERFILE) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY/ADD from the build context (not ``--from`` stages)."""
    copies = []
    for keyword, args in dockerfile_instructions(path):
        if keyword not in ("COPY", "ADD"):
            continue
        words = json.loads(args) if args.startswith("[") else shlex.split(args)
        flags = [w for w in words if w.startswith("--")]
        if any(flag.startswith("--from") for flag in flags):
            continue
        paths = [w for w in words if not w.startswith("--")]
        copies.append((paths[:-1], paths[-1]))
    return copies


def build_context() -> Path:
    build = services(compose_config(COMPOSE))["deephaven"]["build"]
    return (DOCKER / build["context"]).resolve()


def test_compose_build_points_at_this_dockerfile_and_the_repo_root():
    build = services(compose_config(COMPOSE))["deephaven"]["build"]
    assert build_context() == REPO
    assert (build_context() / build["dockerfile"]).resolve() == DOCKERFILE
    for path in (COMPOSE, ANONYMOUS, TLS):
        for name, service in services(compose_config(path, TLS_ENV)).items():
            env_files = service.get("env_file", [])
            for env_file in [env_files] if isinstance(env_files, str) else env_files:
                assert (DOCKER / env_file).is_file(), f"{path.name}: service {name}: env_file {env_file} is missing"


def test_every_copy_source_exists_and_examples_are_not_empty():
    copies = copy_sources()
    destinations = {dest for _, dest in copies}
    assert {"/opt/dh_tf/examples", "/app.d"} <= destinations
    for sources, dest in copies:
        for source in sources:
            path = build_context() / source
            assert path.exists(), f"Dockerfile: COPY {source} {dest}: {source} is missing from the build context"
            if path.is_dir():
                assert any(path.iterdir()), f"Dockerfile: COPY {source} {dest}: {source}/ is empty"
    examples = build_context() / "examples"
    assert sorted(p.name for p in examples.glob("*.py")), "examples/ holds no example"


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, TRAINER_DOCKERFILE], ids=lambda p: p.name)
def test_dockerignore_keeps_what_the_dockerfile_copies(dockerfile):
    ignore = dockerfile.with_name(f"{dockerfile.name}.dockerignore")  # BuildKit's per-Dockerfile ignore file
    patterns = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert ".venv" in patterns and ".git" in patterns
    assert "docker/tls" in patterns  # make_tls_certs.sh's keys (docker/README.md, TLS) never enter an image
    for sources, _ in copy_sources(dockerfile):
        for source in sources:
            hits = [p for p in patterns if not p.startswith("!") and fnmatch.fnmatch(source.rstrip("/"), p)]
            assert not hits, f"Dockerfile.dockerignore drops {source} (pattern {hits})"


def pinned(requirement_lines: list[str], name: str) -> str:
    for line in requirement_lines:
        m = re.fullmatch(rf"\s*{re.escape(name)}\s*==\s*([^\s;#]+).*", line)
        if m:
            return m.group(1)
    raise AssertionError(f"no {name}==... pin")


def test_versions_match_the_project_pins():
    dev_requirements = (REPO / "requirements-dev.txt").read_text().splitlines()
    deephaven_version = pinned(dev_requirements, "deephaven-core")
    tensorflow_version = pinned(dev_requirements, "tensorflow-cpu")
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'"deephaven-core=={deephaven_version}"' in pyproject

    instructions = dockerfile_instructions()
    assert instructions[0] == ("ARG", f"DEEPHAVEN_VERSION={deephaven_version}")
    assert instructions[1] == ("FROM", "ghcr.io/deephaven/server:${DEEPHAVEN_VERSION}")
    assert ("ARG", f"TENSORFLOW_VERSION={tensorflow_version}") in instructions
    args = services(compose_config(COMPOSE))["deephaven"]["build"]["args"]
    assert args == {"DEEPHAVEN_VERSION": deephaven_version, "TENSORFLOW_VERSION": tensorflow_version}

    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any("pip install --no-cache-dir --no-deps /src" in run for run in runs)
    assert any('"${tf}==${TENSORFLOW_VERSION}"' in run and "tensorflow-cpu" in run for run in runs)


IDE_PLUGINS = {
    "deephaven-plugin-ui": "DEEPHAVEN_PLUGIN_UI_VERSION",
    "deephaven-plugin-plotly-express": "DEEPHAVEN_PLUGIN_PLOTLY_EXPRESS_VERSION",
}


def test_the_image_installs_the_training_panel_plugins_at_the_project_pins_and_keeps_deephaven_core():
    """dh_tf.training_panel's plugins (the ``ide`` extra) are in the image at the versions the tests run, and the
    pip call that installs them pins deephaven-core to the image's own version (pip may not replace it)."""
    dev_requirements = (REPO / "requirements-dev.txt").read_text().splitlines()
    pyproject = (REPO / "pyproject.toml").read_text()
    instructions = dockerfile_instructions()
    from_index = next(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    for name, arg in IDE_PLUGINS.items():
        version = pinned(dev_requirements, name)
        assert f'"{name}=={version}"' in pyproject  # the ide extra
        declared = [i for i, instruction in enumerate(instructions) if instruction == ("ARG", f"{arg}={version}")]
        assert declared and declared[0] > from_index, f"ARG {arg}={version} must follow FROM to reach RUN"
        installing = [run for run in runs if f'"{name}==${{{arg}}}"' in run]
        assert len(installing) == 1 and "pip install --no-cache-dir" in installing[0], installing
        assert '"deephaven-core==${core}"' in installing[0]
        assert "core=\"$(pip show deephaven-core | sed -n 's/^Version: //p')\"; test -n \"${core}\"" in installing[0]


# ---------------------------------------------------------------------------------------------
# The trainer service: no JVM, no port, the server's key, started once the server is healthy


def trainer_service(path: Path = COMPOSE, env: dict[str, str] = SAMPLE_ENV) -> dict[str, Any]:
    return services(compose_config(path, env))["trainer"]


def test_trainer_publishes_no_port_and_reaches_the_server_by_its_service_name():
    config = compose_config(COMPOSE)
    trainer = trainer_service()
    assert not {"ports", "expose", "network_mode", "networks"} & set(trainer), trainer
    env = environment(trainer)
    assert env["DH_HOST"] == "deephaven" and env["DH_HOST"] in services(config)  # compose's default network
    container_ports = [str(p).rsplit(":", 1)[-1] for p in services(config)["deephaven"]["ports"]]
    assert env["DH_PORT"] in container_ports  # the server's port inside the network, not the published one
    custom = environment(trainer_service(env={**SAMPLE_ENV, "DH_PORT": "10123"}))
    assert custom["DH_PORT"] == "10000"
    assert env["DH_TABLE"] == "dh_tf_demo"
    assert re.search(r"^\s*dh_tf_demo = _demo_table\(", APP_SCRIPT.read_text(), re.M)  # made at server start
    assert float(env["DH_CONNECT_TIMEOUT"]) > 0
    assert trainer.get("restart") == "no"  # trains once and exits with its status


def test_trainer_uses_the_servers_key_and_waits_for_a_healthy_server():
    raw_env = environment(services(load_yaml(COMPOSE))["trainer"])
    assert raw_env["DH_PSK"].startswith("${DH_PSK:?")  # the same required variable as the server's key
    assert environment(trainer_service())["DH_PSK"] == SAMPLE_ENV["DH_PSK"]
    assert trainer_service()["depends_on"] == {"deephaven": {"condition": "service_healthy"}}
    health = services(compose_config(COMPOSE))["deephaven"]["healthcheck"]
    # The probe the official server image ships and uses in its own HEALTHCHECK; the gRPC health
    # status is SERVING only after application mode (which makes dh_tf_demo) has run.
    assert health["test"][:2] == ["CMD", "/opt/grpc_health_probe/grpc_health_probe"]
    assert "-addr=localhost:10000" in health["test"]
    assert re.fullmatch(r"\d+s", health["start_period"]) and int(health["start_period"][:-1]) >= 60


def test_anonymous_override_makes_the_trainer_anonymous_too():
    override = trainer_service(ANONYMOUS)
    assert set(override) == {"environment"}, override
    effective = merged(trainer_service(), override)
    assert environment(effective)["DH_PSK"] == ""  # remote_trainer.py: no key -> anonymous
    assert "ports" not in effective


def test_trainer_image_has_no_jvm_and_runs_the_remote_trainer_example():
    build = trainer_service()["build"]
    assert (DOCKER / build["context"]).resolve() == REPO
    assert (REPO / build["dockerfile"]).resolve() == TRAINER_DOCKERFILE
    instructions = dockerfile_instructions(TRAINER_DOCKERFILE)
    assert instructions[:2] == [("ARG", "PYTHON_VERSION=3.12"), ("FROM", "python:${PYTHON_VERSION}-slim")]
    assert [k for k, _ in instructions].count("FROM") == 1
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN").lower()
    for word in ("java", "jdk", "jre", "deephaven-server", "deephaven-core", "apt-get"):
        assert word not in runs, f"trainer.Dockerfile installs {word}: the trainer must need no JVM"
    # dh_tf with its `remote` extra, dependencies resolved (NOTE [ Lean installs ] in pyproject.toml)
    assert 'pip install --no-cache-dir "/src[remote]"' in runs
    assert "--no-deps" not in runs
    copies = copy_sources(TRAINER_DOCKERFILE)
    assert (["examples/remote_trainer.py"], "/opt/dh_tf/remote_trainer.py") in copies
    for sources, dest in copies:
        for source in sources:
            assert (REPO / source).exists(), f"trainer.Dockerfile: COPY {source} {dest}: {source} is missing"
    commands = [json.loads(args) for keyword, args in instructions if keyword == "CMD"]
    assert commands == [["python", "/opt/dh_tf/remote_trainer.py"]]
    assert ("USER", "trainer") in instructions


def test_trainer_versions_match_the_project_pins():
    dev_requirements = (REPO / "requirements-dev.txt").read_text().splitlines()
    tensorflow_version = pinned(dev_requirements, "tensorflow-cpu")
    pydeephaven_version = pinned(dev_requirements, "pydeephaven")
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert f"pydeephaven=={pydeephaven_version}" in pyproject["optional-dependencies"]["remote"]
    assert pyproject["dependencies"] == ["numpy>=1.24"]  # no TensorFlow, no deephaven-core
    instructions = dockerfile_instructions(TRAINER_DOCKERFILE)
    assert ("ARG", f"TENSORFLOW_VERSION={tensorflow_version}") in instructions
    assert ("ARG", f"PYDEEPHAVEN_VERSION={pydeephaven_version}") in instructions
    assert trainer_service()["build"]["args"] == {
        "PYTHON_VERSION": "3.12",
        "TENSORFLOW_VERSION": tensorflow_version,
        "PYDEEPHAVEN_VERSION": pydeephaven_version,
    }
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any(
        '"${tf}==${TENSORFLOW_VERSION}"' in run
        and "tensorflow-cpu" in run
        and '"pydeephaven==${PYDEEPHAVEN_VERSION}"' in run
        for run in runs
    )


def read_app_config(path: Path) -> dict[str, str]:
    """A Deephaven ``.app`` file: Java properties, ``key=value`` lines and ``#`` comments."""
    props = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


def test_app_config_names_existing_scripts_and_is_enabled_in_the_image():
    apps = sorted(APP_DIR.glob("*.app"))
    assert [p.name for p in apps] == ["dh_tf_demo.app"]
    props = read_app_config(apps[0])
    assert {k: props.get(k) for k in ("type", "scriptType", "enabled")} == {
        "type": "script",
        "scriptType": "python",
        "enabled": "true",
    }
    assert props.get("id") and props.get("name")
    files = [value for key, value in sorted(props.items()) if re.fullmatch(r"file_\d+", key)]
    assert files == ["dh_tf_demo_data.py"]
    for name in files:
        assert (APP_DIR / name).is_file(), f"{apps[0].name}: {name} is missing from {APP_DIR}"
    # The image puts app.d where START_OPTS points application mode.
    assert (["docker/app.d"], "/app.d") in copy_sources()


def test_app_script_compiles_and_imports_only_stdlib_and_deephaven():
    source = APP_SCRIPT.read_text()
    tree = ast.parse(compile(source, str(APP_SCRIPT), "exec", flags=ast.PyCF_ONLY_AST))
    modules = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    modules |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert modules <= {"os", "shutil", "traceback", "deephaven"}, modules
    # Start-up must not abort the server: every top-level statement that does work sits in a try.
    for node in tree.body:
        assert isinstance(node, (ast.Expr, ast.Import, ast.ImportFrom, ast.FunctionDef, ast.Try, ast.Delete)), (
            f"line {node.lineno}: top-level {type(node).__name__} outside try/except"
        )
    handlers = [h for node in tree.body if isinstance(node, ast.Try) for h in node.handlers]
    assert handlers and all(isinstance(h.type, ast.Name) and h.type.id == "Exception" for h in handlers)


# ---------------------------------------------------------------------------------------------
# The app script against the embedded server

APP_CHILD = r"""
import json, os, sys
from pathlib import Path

from deephaven_server import Server

script, port, tmp, examples = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
Server(port=port, jvm_args=["-Xmx1g"]).start()
code = compile(Path(script).read_text(), script, "exec")
result = {}

# 1. A data directory that cannot be created: the script reports it and does not raise.
(tmp / "a_file").write_text("")
os.environ.update(DH_TF_DEMO_DIR=str(tmp / "a_file" / "demo"), DH_TF_EXAMPLES_SRC=str(tmp / "none"),
                  DH_TF_NOTEBOOK_DIR=str(tmp / "notebooks"))
scope = {"__name__": "__main__"}
exec(code, scope)
result["bad_dir_has_table"] = "dh_tf_demo" in scope

# 2. The real thing; an example the user edited in the IDE is kept.
edited = tmp / "notebooks" / "dh_tf_examples" / "quickstart.py"
edited.parent.mkdir(parents=True)
edited.write_text("# my edits\n")
os.environ.update(DH_TF_DEMO_DIR=str(tmp / "demo"), DH_TF_EXAMPLES_SRC=examples)
scope = {"__name__": "__main__"}
exec(code, scope)
table = scope["dh_tf_demo"]
files = sorted(p.name for p in (tmp / "demo").iterdir())
mtime = (tmp / "demo" / files[0]).stat().st_mtime_ns
from deephaven.numpy import to_numpy
labels = to_numpy(table.view(["Label"]))[:, 0]
result.update(
    rows=table.size, columns=[[c.name, str(c.data_type)] for c in table.columns], files=files,
    label_values=sorted(int(v) for v in set(labels.tolist())), label_mean=float(labels.mean()),
    globals=sorted(k for k in scope if not k.startswith("__")),
    seeded=sorted(p.name for p in edited.parent.iterdir()), edited_kept=edited.read_text() == "# my edits\n",
)

# 3. A restart: the data is read, not written again.
scope = {"__name__": "__main__"}
exec(code, scope)
result["rewritten"] = (tmp / "demo" / files[0]).stat().st_mtime_ns != mtime
result["rows_again"] = scope["dh_tf_demo"].size
print("RESULT " + json.dumps(result))
"""


@pytest.mark.slow
def test_app_script_runs_against_the_embedded_server(tmp_path):
    proc = run_python(APP_CHILD, str(APP_SCRIPT), str(free_port()), str(tmp_path), str(REPO / "examples"), timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])

    assert not result["bad_dir_has_table"]
    assert "dh_tf demo: could not create the demo table dh_tf_demo" in proc.stdout

    assert result["rows"] == result["rows_again"] == 200_000
    assert result["columns"] == [["Id", "long"], *([f"X{n}", "float"] for n in range(8)), ["Label", "int"]]
    assert result["files"] == ["dh_tf_demo-200000.parquet"]
    assert result["label_values"] == [0, 1] and 0.3 < result["label_mean"] < 0.7
    assert not result["rewritten"]
    # Only the table is left in the console's globals, besides the script's imports.
    assert [
        name for name in result["globals"] if name not in ("os", "shutil", "traceback", "empty_table", "parquet")
    ] == ["dh_tf_demo"]
    examples = sorted(p.name for p in (REPO / "examples").glob("*.py"))
    assert result["seeded"] == examples and result["edited_kept"]


# ---------------------------------------------------------------------------------------------
# The TLS override: a port beyond loopback only with the engine's TLS settings and the key


def test_tls_override_requires_its_certificates_and_the_key():
    for env in ({"DH_TLS_DIR": "./tls"}, SAMPLE_ENV, {**SAMPLE_ENV, "DH_TLS_DIR": ""}):
        with pytest.raises(MissingVariable, match="DH_TLS_DIR|DH_PSK"):
            compose_config(TLS, env)
    text = TLS.read_text()
    assert ANONYMOUS_AUTH not in text and "Never combine this file with docker-compose.anonymous.yml" in text


def test_tls_override_serves_tls_with_the_base_flags_and_publishes_beyond_loopback(tmp_path):
    from dh_tf.server import tls_jvm_args

    base = services(compose_config(COMPOSE))["deephaven"]
    override = services(compose_config(TLS, TLS_ENV))["deephaven"]
    # The same engine settings as start_server(tls=...), on the mounted directory.
    for name in ("server.pem", "server.key"):
        (tmp_path / name).write_text("")
    ssl_flags = [flag.replace(str(tmp_path), "/tls") for flag in tls_jvm_args((tmp_path / "server.pem", tmp_path / "server.key"))]
    assert shlex.split(start_opts(override)) == [*shlex.split(start_opts(base)), *ssl_flags]
    assert override["volumes"] == ["./tls:/tls:ro"]
    assert override["ports"] == ["0.0.0.0:8443:10000"]
    custom = services(compose_config(TLS, {**TLS_ENV, "DH_TLS_BIND": "10.0.0.5", "DH_TLS_PORT": "9443"}))["deephaven"]
    assert custom["ports"] == ["10.0.0.5:9443:10000"]
    effective = merged(base, override)
    assert [host_ip(p) for p in effective["ports"]] == [LOOPBACK, "0.0.0.0"]  # both reach the one TLS port
    assert [str(p).rsplit(":", 1)[-1] for p in effective["ports"]] == ["10000", "10000"]
    # The health check probes over TLS, trusting the same CA; the certificate names localhost.
    test = override["healthcheck"]["test"]
    assert test[:3] == ["CMD", "/opt/grpc_health_probe/grpc_health_probe", "-addr=localhost:10000"]
    assert {"-tls", "-tls-ca-cert=/tls/ca.pem"} <= set(test)
    assert merged(base, override)["healthcheck"]["start_period"] == base["healthcheck"]["start_period"]


def test_tls_override_makes_the_trainer_trust_the_ca():
    trainer = trainer_service(TLS, TLS_ENV)
    assert set(trainer) == {"volumes", "environment"}, trainer
    assert trainer["volumes"] == ["./tls/ca.pem:/tls/ca.pem:ro"]  # the CA only, not the server's key
    assert environment(trainer) == {"DH_TLS_ROOT_CERTS": "/tls/ca.pem"}
    effective = merged(trainer_service(), trainer)
    assert "ports" not in effective and environment(effective)["DH_HOST"] == "deephaven"
    assert 'os.environ.get("DH_TLS_ROOT_CERTS")' in (REPO / "examples" / "remote_trainer.py").read_text()


def test_make_tls_certs_names_every_host_the_demo_uses_and_keeps_keys_out_of_git():
    assert os.access(MAKE_CERTS, os.X_OK)
    assert subprocess.run(["sh", "-n", str(MAKE_CERTS)], capture_output=True, timeout=30).returncode == 0
    script = MAKE_CERTS.read_text()
    # localhost: the health check; deephaven: the trainer's DH_HOST; the files the override mounts.
    assert 'names="DNS:localhost,IP:127.0.0.1,DNS:deephaven"' in script
    for name in ("ca.pem", "server.pem", "server.key"):
        assert f'"$dir/{name}"' in script
    assert "docker/tls/" in (REPO / ".gitignore").read_text().splitlines()

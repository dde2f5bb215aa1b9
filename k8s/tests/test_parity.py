"""The manifests agree with compose.yaml and with what the programs read.

Each test compares the same fact on two or three sides: images, commands,
environment variables, ports, probes, the shutdown timing, the edge's
routing. A change made on one side only fails here.

compose's `migrate` service is, here, the init container `migrate` of every
app pod (test_operations.py checks they are alike): web's stands for them.
"""

from __future__ import annotations

import ast
import json
import os
import re
import tomllib
from typing import Any
from urllib.parse import urlsplit

import pytest
from manifests import (
    DOCKERFILE,
    K8S,
    METRICS,
    NOT_RUN,
    OVERLAYS,
    PACKAGE,
    PROGRAMS,
    PYPROJECT,
    ROOT,
    SELF_CONTAINED,
    SERVICES,
    SRC,
    Manifest,
    compose_environment,
    container,
    container_ports,
    containers,
    environment,
    every_module_reading_the_environment,
    find,
    interpolate,
    literal,
    module_constant,
    pod_spec,
    program_modules,
    reads,
    source,
    workloads,
)

#: compose service → (kind, name) of its workload and the name of its container.
WORKLOADS = {
    "web": ("Deployment", "web", "web"),
    "broadcaster": ("Deployment", "broadcaster", "broadcaster"),
    "relay": ("Deployment", "relay", "relay"),
    "migrate": ("Deployment", "web", "migrate"),
    "db": ("StatefulSet", "db", "db"),
    "redis": ("Deployment", "redis", "redis"),
}
APP_SERVICES = ("web", "broadcaster", "relay", "migrate")
#: The long-running app services, each with its replicas and probes.
SERVERS = ("web", "broadcaster", "relay")
DATA_SERVICES = ("db", "redis")

#: Variables only the manifests set, and why.
KUBERNETES_ONLY = {
    # The volume's root may hold lost+found (a fresh ext4 volume): PostgreSQL
    # wants an empty directory, so its data lives one level down.
    "db": {"PGDATA"},
    # The kubelet expands $(REDIS_PASSWORD) in the args from the container's
    # environment; compose interpolates ${REDIS_PASSWORD} itself.
    "redis": {"REDIS_PASSWORD"},
    # Derived from the pod's memory limit (test_operations.py), which compose
    # doesn't set: compose runs with the program's default.
    "broadcaster": {"BROADCASTER_MAX_CONNECTIONS"},
}
#: Variables an overlay may set beyond compose's though no program of
#: ours reads them: libpq's own (psycopg reads them in every app
#: process), one for each option DATABASE_URL's query takes
#: (web/settings/database.py). The query is the place for them; these are
#: the way to set one for a whole overlay (PGSSLMODE=verify-full in its
#: app-config). Anything else a program doesn't read is a mistake.
LIBPQ_ENVIRONMENT = {
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLCRL",
    "PGSSLNEGOTIATION",
    "PGCHANNELBINDING",
    "PGCONNECT_TIMEOUT",
    "PGAPPNAME",
    "PGTARGETSESSIONATTRS",
}

HAPROXY = (SERVICES / "edge" / "haproxy.cfg").read_text()


def services_in(overlay: str) -> tuple[str, ...]:
    return APP_SERVICES + DATA_SERVICES if overlay in SELF_CONTAINED else APP_SERVICES


def cases(*, apps_only: bool = False) -> list[tuple[str, str]]:
    return [
        (overlay, service)
        for overlay in OVERLAYS
        for service in services_in(overlay)
        if service in APP_SERVICES or not apps_only
    ]


def workload(docs: list[Manifest], service: str) -> Manifest:
    kind, name, _ = WORKLOADS[service]
    return find(docs, kind, name)


def main_container(docs: list[Manifest], service: str) -> Manifest:
    return container(workload(docs, service), WORKLOADS[service][2])


def app_containers(docs: list[Manifest]) -> list[tuple[str, Manifest]]:
    """Every app container, with the compose service whose program it runs."""
    return [
        ("migrate" if box["name"] == "migrate" else name, box)
        for name in SERVERS
        for box in containers(workload(docs, name))
    ]


def kubelet_expanded(words: list[str] | None) -> list[str] | None:
    """A command as compose's interpolate() writes variables: $(X) as <X>."""
    if words is None:
        return None
    return [re.sub(r"\$\((\w+)\)", r"<\1>", word) for word in words]


def compose_words(words: list[str] | None) -> list[str] | None:
    return None if words is None else [interpolate(word) for word in words]


def seconds(duration: str) -> float:
    """compose's ``15s``, ``1m30s``; HAProxy's ``1h``, ``30s``."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


# Images and commands.


@pytest.mark.parametrize(("overlay", "service"), cases())
def test_image_is_the_one_compose_builds_or_runs(
    rendered: dict[str, list[Manifest]], compose: dict[str, Manifest], overlay: str, service: str
) -> None:
    image = interpolate(compose[service]["image"])
    for box in containers(workload(rendered[overlay], service)):
        assert box["image"] == image, f"{overlay}: {service}/{box['name']}"


def test_app_image_is_the_makefiles() -> None:
    # APP_IMAGE's default, the demo image's name directly or through a variable.
    makefile = (ROOT / "Makefile").read_text()
    definitions = dict(re.findall(r"^(\w+) [:?]?= (.+)$", makefile, re.M))
    image = definitions["APP_IMAGE"]
    while (reference := re.fullmatch(r"\$\((\w+)\)", image)) is not None:
        image = definitions[reference.group(1)]
    assert image == "django-realtime-notifications/app:dev"


@pytest.mark.parametrize(("overlay", "service"), cases())
def test_command_is_composes(
    rendered: dict[str, list[Manifest]], compose: dict[str, Manifest], overlay: str, service: str
) -> None:
    # compose's entrypoint is Kubernetes' command; compose's command, its args.
    box = main_container(rendered[overlay], service)
    assert box.get("command") == compose[service].get("entrypoint")
    assert kubelet_expanded(box.get("args")) == compose_words(compose[service].get("command"))


def dockerfile_stages() -> tuple[str, str]:
    """The image's build stage and its final stage."""
    build, _, final = DOCKERFILE.read_text().rpartition("\nFROM ")
    return build, final


def image_environment() -> dict[str, str]:
    """What the image's final stage sets (ENV): in every container's environment."""
    instructions = dockerfile_stages()[1].replace("\\\n", " ").splitlines()
    return {
        name: value
        for line in instructions
        if line.startswith("ENV ")
        for name, value in re.findall(r"\b([A-Z][A-Z0-9_]*)=(\S+)", line)
    }


def console_scripts() -> dict[str, str]:
    """The package's console scripts: name → ``module:function``."""
    scripts: dict[str, str] = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    return scripts


def top_level_names(module: str) -> set[str]:
    """The functions and classes a module (as in PROGRAMS) defines at its top level."""
    return {
        node.name
        for node in ast.parse(source(module).read_text()).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }


@pytest.mark.parametrize("service", APP_SERVICES)
def test_entry_scripts_are_in_the_image(compose: dict[str, Manifest], service: str) -> None:
    # Every app service runs a program the image holds, and that PROGRAMS
    # names (so the variables checked are the ones that program reads): the
    # image's entrypoint, web's script, which the image copies from
    # services/web to /app/web; a console script of the package, which the
    # image installs into /opt/venv (on PATH); or django-admin (Django's, in
    # the same virtualenv) with one of the package's management commands.
    build, final = dockerfile_stages()
    image_env = image_environment()
    (default,) = re.findall(r"^ENTRYPOINT (\[.*\])$", final, re.M)
    assert json.loads(default) == ["/app/web/entrypoint.sh"]
    assert image_env["PATH"].startswith("/opt/venv/bin:")
    assert re.search(r"^COPY --from=build /opt/venv /opt/venv$", final, re.M)
    # The project's modules (web.…) are imported from /app.
    assert image_env["PYTHONPATH"] == "/app"
    argv = [*compose[service].get("entrypoint", json.loads(default))]
    argv += compose[service].get("command", [])
    program = argv[0]
    if program.startswith("/"):
        # A script of the project: /app/<folder>/ is what `COPY <origin> <folder>` copies.
        assert re.search(r"^WORKDIR /app$", build, re.M)
        assert re.search(r"^COPY --from=build /app /app$", final, re.M)
        copies = re.findall(r"^COPY (\S+) (\S+)$", build, re.M)
        copied = {target: origin for origin, target in copies}
        folder, _, rest = program.removeprefix("/app/").partition("/")
        assert folder in copied, f"the image lacks /app/{folder}/"
        assert build.index("\nWORKDIR /app\n") < build.index(f"\nCOPY {copied[folder]} {folder}\n")
        script = ROOT / copied[folder] / rest
        assert script.is_file(), script
        assert os.access(script, os.X_OK), f"{script} isn't executable"
        # What it starts is the program PROGRAMS names (gunicorn's config, the app).
        started = re.findall(r"\b(web(?:\.\w+)+)\b", script.read_text().rpartition("\nexec ")[2])
        assert started, f"{script} starts none of the project's modules"
        for name in started:
            assert name.replace(".", "/") + ".py" in PROGRAMS[service], name
    elif program == "django-admin":
        # Django's: no default settings module, so the image names one
        # (compose and the manifests may name another: LAUNCHER_READS).
        named = compose_environment(compose[service]).get(
            "DJANGO_SETTINGS_MODULE", image_env["DJANGO_SETTINGS_MODULE"]
        )
        settings = named.replace(".", "/") + ".py"
        assert settings in PROGRAMS[service], settings
        installed = (SERVICES / "web" / "settings" / "base.py").read_text()
        assert '"live_notifications",' in installed, "the demo project lacks the app"
        command = f"live_notifications/management/commands/{argv[1]}.py"
        assert (PACKAGE / "management" / "commands" / f"{argv[1]}.py").is_file(), command
        assert "Command" in top_level_names(command), command
        assert command in PROGRAMS[service], command
    else:
        # A console script of the package, which the image builds and installs.
        assert re.search(r"^COPY pyproject\.toml\b", build, re.M)
        assert re.search(r"^COPY src \S+$", build, re.M)
        assert re.search(r"/opt/venv/bin/pip install .*\.whl", build)
        scripts = console_scripts()
        assert program in scripts, f"pyproject.toml declares no script {program}"
        module, _, function = scripts[program].partition(":")
        path = module.replace(".", "/") + ".py"
        assert (SRC / path).is_file(), scripts[program]
        assert function in top_level_names(path), scripts[program]
        assert path in PROGRAMS[service], f"{program} runs {path}, not {service}'s program"


def test_modules_not_run_are_run_nowhere(
    rendered: dict[str, list[Manifest]], compose: dict[str, Manifest]
) -> None:
    # NOT_RUN's modules read the environment, and no container runs them.
    commands = [
        [*service.get("entrypoint", []), *service.get("command", [])]
        for service in compose.values()
    ]
    commands += [
        [*box.get("command", []), *box.get("args", [])]
        for docs in rendered.values()
        for workload in workloads(docs)
        for box in containers(workload)
    ]
    for module in NOT_RUN:
        assert source(module).is_file(), module
        name = module.rpartition("/")[2]
        for command in commands:
            assert not any(name in word for word in command), command


# Environment variables.


def test_every_module_reading_the_environment_is_known() -> None:
    known = {module for service in PROGRAMS for module in program_modules(service)}
    reading = every_module_reading_the_environment()
    assert reading - NOT_RUN <= known, sorted(reading - NOT_RUN - known)
    # The walk finds the package's modules and the project's.
    assert {"live_notifications/shared/eventlog.py", "web/settings/base.py"} <= reading & known


@pytest.mark.parametrize(("overlay", "service"), cases())
def test_variables_are_composes(
    rendered: dict[str, list[Manifest]],
    compose: dict[str, Manifest],
    secret_template: dict[str, dict[str, str]],
    overlay: str,
    service: str,
) -> None:
    docs = rendered[overlay]
    names = set(environment(docs, secret_template, main_container(docs, service)))
    expected = set(compose_environment(compose[service])) | KUBERNETES_ONLY.get(service, set())
    if overlay == "production":
        # Production may set more of what the programs (secure cookies) or
        # libpq (LIBPQ_ENVIRONMENT) read.
        assert names >= expected
    else:
        assert names == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_programs_read_every_variable_and_get_the_required_ones(
    rendered: dict[str, list[Manifest]],
    secret_template: dict[str, dict[str, str]],
    program_reads: dict[str, dict[str, ast.expr | None]],
    overlay: str,
) -> None:
    docs = rendered[overlay]
    # What the image's final stage sets (ENV) is in every container's environment.
    from_image = set(image_environment())
    for service, box in app_containers(docs):
        reads = program_reads[service]
        required = {name for name, default in reads.items() if default is None} - from_image
        names = set(environment(docs, secret_template, box)) - LIBPQ_ENVIRONMENT
        where = f"{service}/{box['name']}"
        assert names <= set(reads), f"{where}: nothing reads {names - set(reads)}"
        assert required <= names, f"{where}: missing {required - names}"


def test_libpq_variables_are_libpqs_options() -> None:
    # LIBPQ_ENVIRONMENT is the environment form of DATABASE_URL's query keys
    # (libpq's documentation pairs them: sslmode/PGSSLMODE...), no more.
    database = (SERVICES / "web" / "settings" / "database.py").read_text()
    for variable in LIBPQ_ENVIRONMENT:
        option = {
            "PGAPPNAME": "application_name",
            "PGCHANNELBINDING": "channel_binding",
            "PGTARGETSESSIONATTRS": "target_session_attrs",
        }.get(variable, variable.removeprefix("PG").lower())
        assert f'"{option}"' in database, f"DATABASE_URL takes no {option} ({variable})"


def test_settings_match_composes_defaults(
    rendered: dict[str, list[Manifest]],
    compose: dict[str, Manifest],
    secret_template: dict[str, dict[str, str]],
) -> None:
    # The base holds compose's values; the local overlay the same, but for the
    # origins of the ports it forwards to (8000 and 18000) and its demo secrets.
    for service in APP_SERVICES + DATA_SERVICES:
        env = environment(
            rendered["base"], secret_template, main_container(rendered["base"], service)
        )
        for name, value in compose_environment(compose[service]).items():
            if env[name] is not None and "<" not in value:
                assert env[name] == value, f"{service}: {name}"


def test_local_overlay_changes_only_the_origins(
    rendered: dict[str, list[Manifest]], compose: dict[str, Manifest]
) -> None:
    # Browsers send the origin of the port make k8s-up (8000) or make k8s-test
    # (18000) forwards to; compose's default names 8000.
    def settings(overlay: str) -> dict[str, dict[str, str]]:
        """Every ConfigMap's data, by its name without the generator's hash."""
        return {
            d["metadata"]["name"].rsplit("-", 1)[0]: d["data"]
            for d in rendered[overlay]
            if d["kind"] == "ConfigMap"
        }

    base, local = settings("base"), settings("local")
    assert set(base) == {"app-config", "event-history"}
    default = compose_environment(compose["web"])["DJANGO_CSRF_TRUSTED_ORIGINS"]
    origins = default.split(",")
    assert local["app-config"].pop("DJANGO_CSRF_TRUSTED_ORIGINS").split(",") == [
        *origins,
        *(origin.replace(":8000", ":18000") for origin in origins),
    ]
    assert base["app-config"].pop("DJANGO_CSRF_TRUSTED_ORIGINS") == default
    assert local == base


def test_local_demo_secrets_are_composes_addresses(
    rendered: dict[str, list[Manifest]], compose: dict[str, Manifest]
) -> None:
    docs = rendered["local"]
    app = environment(docs, {}, main_container(docs, "web"))
    db = environment(docs, {}, main_container(docs, "db"))
    redis = environment(docs, {}, main_container(docs, "redis"))
    passwords = {
        "POSTGRES_PASSWORD": db["POSTGRES_PASSWORD"],
        "REDIS_PASSWORD": redis["REDIS_PASSWORD"],
    }
    assert redis["REDISCLI_AUTH"] == redis["REDIS_PASSWORD"]
    expected = compose_environment(compose["web"])
    for name, password in passwords.items():
        assert password and "demo" in password, name
        for variable in ("DATABASE_URL", "REDIS_URL"):
            expected[variable] = expected[variable].replace(f"<{name}>", password)
    assert app["DATABASE_URL"] == expected["DATABASE_URL"]
    assert app["REDIS_URL"] == expected["REDIS_URL"]
    assert app["DJANGO_SECRET_KEY"] and "demo" in app["DJANGO_SECRET_KEY"]


def test_secret_template_has_no_secret(secret_template: dict[str, dict[str, str]]) -> None:
    for name, keys in secret_template.items():
        for key, value in keys.items():
            assert value == "", f"{name}: {key}"
    assert set(secret_template) == {"app-secrets", "db-secrets", "redis-secrets"}


@pytest.mark.parametrize("side", ["compose", *OVERLAYS])
def test_app_services_agree_on_every_variable_they_share(
    rendered: dict[str, list[Manifest]],
    compose: dict[str, Manifest],
    secret_template: dict[str, dict[str, str]],
    side: str,
) -> None:
    # One value per variable, whoever reads it: the relay trims the stream to
    # the history the broadcasters replay from, every app signs and checks
    # tokens with one key, uses one database...
    values: dict[str, dict[str, str | None]] = {}
    for service in APP_SERVICES:
        if side == "compose":
            env: dict[str, str | None] = dict(compose_environment(compose[service]))
        else:
            docs = rendered[side]
            env = environment(docs, secret_template, main_container(docs, service))
        for name, value in env.items():
            values.setdefault(name, {})[service] = value
    for name, by_service in values.items():
        assert len(set(by_service.values())) == 1, f"{side}: {name} differs: {by_service}"
    for name in ("EVENT_HISTORY_SECONDS", "EVENT_HISTORY_MAX_EVENTS"):
        assert {"relay", "broadcaster"} <= set(values.get(name, {})), f"{side}: {name}"


#: Settings that describe the network a stack runs on, not a behaviour: where
#: the edge connects from. The programs default to trusting no one.
NETWORK_FACTS = {"BROADCASTER_TRUSTED_PROXIES"}


@pytest.mark.parametrize("service", ["broadcaster", "relay"])
def test_composes_defaults_are_the_programs(
    request: pytest.FixtureRequest, compose: dict[str, Manifest], service: str
) -> None:
    # What compose.yaml (and so the base: test_settings_match_composes_defaults)
    # gives the program's Config are its own defaults, the README's: the
    # history's length, the broadcasters' position interval. Addresses and
    # NETWORK_FACTS aside.
    config = request.getfixturevalue(f"{service}_config")
    # Config.from_env reads its module and the shared ones it imports.
    read = {
        name
        for module in program_modules(service)
        if module == f"live_notifications/{service}/config.py"
        or module.startswith("live_notifications/shared/")
        for name in reads(source(module))
    }
    env = compose_environment(compose[service])
    given = {
        name: env[name]
        for name in read & set(env)
        if not name.endswith("_URL") and name not in NETWORK_FACTS
    }
    assert given, f"compose.yaml gives {service} none of the settings its Config reads"
    assert config.from_env(given) == config.from_env({}), given


# Ports, Services and probes.


def compose_healthcheck_url(compose: dict[str, Manifest], service: str) -> Any:
    test = compose[service]["healthcheck"]["test"]
    assert test[:4] == ["CMD", "python", "-m", "live_notifications.shared.healthcheck"], test
    assert source("live_notifications/shared/healthcheck.py").is_file()
    return urlsplit(test[4])


def gunicorn_default(variable: str) -> Any:
    """The default gunicorn_conf.py gives ``environment.integer(variable, default)``."""
    gunicorn = ast.parse((SERVICES / "web" / "gunicorn_conf.py").read_text())
    (default,) = [
        literal(node.args[1])
        for node in ast.walk(gunicorn)
        if isinstance(node, ast.Call)
        and node.args
        and getattr(node.args[0], "value", None) == variable
    ]
    return default


#: Each server's public port, by the name the manifests give it.
PUBLIC_PORTS = {"web": "http", "broadcaster": "ws", "relay": "http"}


def program_ports(broadcaster_config: Any, relay_config: Any) -> dict[str, dict[str, int]]:
    """Each server's ports by name, as the programs' defaults set them."""
    return {
        "web": {
            "http": gunicorn_default("WEB_PORT"),
            METRICS: gunicorn_default("WEB_METRICS_PORT"),
        },
        "broadcaster": {"ws": broadcaster_config.port, METRICS: broadcaster_config.metrics_port},
        "relay": {"http": relay_config.port, METRICS: relay_config.metrics_port},
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_are_the_programs_and_composes(
    rendered: dict[str, list[Manifest]],
    compose: dict[str, Manifest],
    broadcaster_config: Any,
    relay_config: Any,
    overlay: str,
) -> None:
    docs = rendered[overlay]
    for service, ports in program_ports(broadcaster_config, relay_config).items():
        assert container_ports(main_container(docs, service)) == ports, service
        public = ports[PUBLIC_PORTS[service]]
        assert compose_healthcheck_url(compose, service).port == public
        if service == "relay":
            continue  # nothing connects to it (below)
        # compose's edge reaches the public port by service name; the
        # Service the edge uses here has that port alone.
        assert re.search(rf"^\s*server-template \w+ [\d-]+ {service}:{public}$", HAPROXY, re.M)
        (exposed,) = find(docs, "Service", service)["spec"]["ports"]
        assert exposed["port"] == public
        assert exposed["targetPort"] == PUBLIC_PORTS[service]


def test_metrics_ports_are_published_nowhere(
    compose: dict[str, Manifest], broadcaster_config: Any, relay_config: Any
) -> None:
    # compose: no published or exposed metrics port, and the edge's backends
    # name the public ports only (test_references.py: no Service has them).
    for service, ports in program_ports(broadcaster_config, relay_config).items():
        published = [str(port) for port in compose[service].get("ports", [])]
        assert not any(str(ports[METRICS]) in port for port in published), service
        assert "expose" not in compose[service], service
        assert not re.search(rf"\b{service}:{ports[METRICS]}\b", HAPROXY), service


def test_image_exposes_the_programs_ports(broadcaster_config: Any, relay_config: Any) -> None:
    # EXPOSE documents the ports: every public one, the metrics port maybe.
    (exposed,) = re.findall(r"^EXPOSE (.+)$", DOCKERFILE.read_text(), re.M)
    ports = program_ports(broadcaster_config, relay_config)
    public = {by_name[PUBLIC_PORTS[name]] for name, by_name in ports.items()}
    metrics = {by_name[METRICS] for by_name in ports.values()}
    assert public <= {int(port) for port in exposed.split()} <= public | metrics


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nothing_connects_to_the_relay(
    rendered: dict[str, list[Manifest]], compose: dict[str, Manifest], overlay: str
) -> None:
    # compose: on the data network only, no published port, not behind the
    # edge. Kubernetes: no Service selects it, so no Ingress reaches it (and
    # its NetworkPolicy admits no one: test_policies.py).
    relay = compose["relay"]
    assert relay["networks"] == ["data"]
    assert "ports" not in relay and "expose" not in relay
    assert not re.search(r"^\s*server(-template)?\s.*\brelay:", HAPROXY, re.M)
    for doc in rendered[overlay]:
        if doc["kind"] == "Service":
            assert doc["spec"]["selector"].get("app.kubernetes.io/name") != "relay"


@pytest.mark.parametrize("overlay", SELF_CONTAINED)
def test_replicas_are_composes(
    rendered: dict[str, list[Manifest]], compose: dict[str, Manifest], overlay: str
) -> None:
    # Production runs more (overlays/production); the others as compose does.
    for service in SERVERS:
        expected = compose[service].get("deploy", {}).get("replicas", 1)
        assert workload(rendered[overlay], service)["spec"]["replicas"] == expected, service


@pytest.mark.parametrize("overlay", SELF_CONTAINED)
def test_data_stores_answer_at_composes_addresses(
    rendered: dict[str, list[Manifest]], compose: dict[str, Manifest], overlay: str
) -> None:
    # DATABASE_URL and REDIS_URL name the services: same names and ports here.
    docs = rendered[overlay]
    env = compose_environment(compose["web"])
    for service, variable in (("db", "DATABASE_URL"), ("redis", "REDIS_URL")):
        address = urlsplit(env[variable])
        assert address.hostname == service
        (exposed,) = find(docs, "Service", service)["spec"]["ports"]
        (declared,) = main_container(docs, service)["ports"]
        assert exposed["port"] == declared["containerPort"] == address.port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_http_probes_are_composes_and_answered(
    rendered: dict[str, list[Manifest]], compose: dict[str, Manifest], overlay: str
) -> None:
    docs = rendered[overlay]
    web = main_container(docs, "web")
    broadcaster = main_container(docs, "broadcaster")
    # compose checks web's /healthz and the broadcasters' /readyz.
    assert compose_healthcheck_url(compose, "web").path == web["readinessProbe"]["httpGet"]["path"]
    assert (
        compose_healthcheck_url(compose, "broadcaster").path
        == broadcaster["readinessProbe"]["httpGet"]["path"]
        == "/readyz"
    )
    assert broadcaster["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The programs answer them.
    health = module_constant(PACKAGE / "operations.py", "HEALTH_PATH")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert web[probe]["httpGet"]["path"] == health
    server = (PACKAGE / "broadcaster" / "server.py").read_text()
    for probe in ("readinessProbe", "livenessProbe"):
        assert f'path == "{broadcaster[probe]["httpGet"]["path"]}"' in server
    for box, name in ((web, "web"), (broadcaster, "broadcaster")):
        ports = {port["name"] for port in box["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            assert box[probe]["httpGet"]["port"] in ports, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_relay_probes_are_composes_and_answered(
    rendered: dict[str, list[Manifest]],
    compose: dict[str, Manifest],
    overlay: str,
) -> None:
    relay = main_container(rendered[overlay], "relay")
    # compose checks /readyz: connected to PostgreSQL and Redis.
    readiness, liveness = relay["readinessProbe"]["httpGet"], relay["livenessProbe"]["httpGet"]
    assert compose_healthcheck_url(compose, "relay").path == readiness["path"] == "/readyz"
    assert liveness["path"] == "/healthz"
    assert {readiness["port"], liveness["port"]} <= {port["name"] for port in relay["ports"]}
    # The program answers them (its own modules, or shared ones).
    modules = [*(PACKAGE / "relay").glob("*.py"), *(PACKAGE / "shared").glob("*.py")]
    strings = {
        node.value
        for module in modules
        for node in ast.walk(ast.parse(module.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert {readiness["path"], liveness["path"]} <= strings


@pytest.mark.parametrize("overlay", SELF_CONTAINED)
def test_data_store_probes_are_composes_healthchecks(
    rendered: dict[str, list[Manifest]], compose: dict[str, Manifest], overlay: str
) -> None:
    for service in DATA_SERVICES:
        test = compose[service]["healthcheck"]["test"]
        command = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
        box = main_container(rendered[overlay], service)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in box:
                assert box[probe]["exec"]["command"] == command, (service, probe)


# Stopping: the grace periods fit what the programs do on SIGTERM.


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_broadcaster_grace_period_covers_its_drain(
    rendered: dict[str, list[Manifest]],
    compose: dict[str, Manifest],
    secret_template: dict[str, dict[str, str]],
    broadcaster_config: Any,
    overlay: str,
) -> None:
    docs = rendered[overlay]
    deployment = find(docs, "Deployment", "broadcaster")
    box = container(deployment, "broadcaster")
    env = environment(docs, secret_template, box)
    drain = float(env.get("BROADCASTER_DRAIN_SECONDS") or broadcaster_config.drain_seconds)
    close = float(env.get("BROADCASTER_CLOSE_TIMEOUT") or broadcaster_config.close_timeout)
    # The broadcaster exits within drain + close timeout + 1 s of SIGTERM,
    # which comes after the preStop pause.
    exit_after = drain + close + 1
    pause = box["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace >= pause + exit_after + 2, f"{grace} s < {pause} + {exit_after} + 2 s of margin"
    assert seconds(compose["broadcaster"]["stop_grace_period"]) >= exit_after + 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_grace_period_covers_gunicorns(
    rendered: dict[str, list[Manifest]], compose: dict[str, Manifest], overlay: str
) -> None:
    deployment = find(rendered[overlay], "Deployment", "web")
    graceful = module_constant(SERVICES / "web" / "gunicorn_conf.py", "graceful_timeout")
    pause = container(deployment, "web")["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] >= pause + graceful + 2
    assert seconds(compose["web"]["stop_grace_period"]) >= graceful + 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_relay_grace_period_is_at_least_composes(
    rendered: dict[str, list[Manifest]], compose: dict[str, Manifest], overlay: str
) -> None:
    # It has nothing to drain: no preStop pause, compose's period at least.
    deployment = find(rendered[overlay], "Deployment", "relay")
    assert "lifecycle" not in container(deployment, "relay")
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace >= seconds(compose["relay"]["stop_grace_period"])


# The edge.


def edge_routes(docs: list[Manifest]) -> dict[str, tuple[str, int, Manifest]]:
    """Every prefix the edge routes: the Service and port it leads to, and the
    route's settings (an Ingress's annotations, an HTTPRoute rule's timeouts)."""
    routes: dict[str, tuple[str, int, Manifest]] = {}
    for doc in docs:
        if doc["kind"] == "Ingress":
            for rule in doc["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    assert path["pathType"] == "Prefix", path
                    backend = path["backend"]["service"]
                    (port,) = [
                        p["port"]
                        for p in find(docs, "Service", backend["name"])["spec"]["ports"]
                        if p["name"] == backend["port"]["name"]
                    ]
                    annotations = doc["metadata"].get("annotations", {})
                    routes[path["path"]] = (backend["name"], port, annotations)
        elif doc["kind"] == "HTTPRoute":
            for rule in doc["spec"]["rules"]:
                ((match,), (backend,)) = rule["matches"], rule["backendRefs"]
                assert match["path"]["type"] == "PathPrefix", match
                routes[match["path"]["value"]] = (
                    backend["name"],
                    backend["port"],
                    rule.get("timeouts", {}),
                )
    return routes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_edge_routes_as_composes(
    rendered: dict[str, list[Manifest]],
    broadcaster_config: Any,
    relay_config: Any,
    overlay: str,
) -> None:
    docs = rendered[overlay]
    ports = program_ports(broadcaster_config, relay_config)
    routes = edge_routes(docs)
    # HAProxy: /ws and /ws/… to the broadcasters, the rest to web. A prefix
    # matches whole path elements: /ws, /ws/, /ws/x, not /wsx. Nothing else:
    # no rule for /metrics, here or there, since no backend serves it.
    assert "use_backend broadcasters if { path_beg /ws/ } or { path /ws }" in HAPROXY
    assert {path: route[:2] for path, route in routes.items()} == {
        "/ws": ("broadcaster", ports["broadcaster"]["ws"]),
        "/": ("web", ports["web"]["http"]),
    }
    assert "/metrics" not in HAPROXY
    # The address web gives clients is under /ws/.
    assert '/ws/"' in (PACKAGE / "views.py").read_text()
    (tunnel,) = re.findall(r"^\s*timeout tunnel (\S+)$", HAPROXY, re.M)
    websocket, site = routes["/ws"][2], routes["/"][2]
    if any(d["kind"] == "Ingress" for d in docs):
        # ingress-nginx: HAProxy's tunnel timeout, far above the ping interval.
        for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
            value = int(websocket[f"nginx.ingress.kubernetes.io/{timeout}"])
            assert value == seconds(tunnel)
            assert value > 2 * broadcaster_config.ping_interval
    else:
        # Gateway API: a WebSocket is one request; "0s" disables the timeouts.
        assert websocket == {"request": "0s", "backendRequest": "0s"}
        # The site's requests: no shorter than gunicorn gives them.
        timeout = module_constant(SERVICES / "web" / "gunicorn_conf.py", "timeout")
        assert seconds(site["request"]) == timeout


# The end-to-end suite drives compose and a cluster through the same verbs.

STACK_COMMANDS = {
    "compose": ROOT / "tests" / "e2e" / "compose-stack.sh",
    "kubernetes": K8S / "scripts" / "local-cluster.sh",
}


def verbs_answered(script: str) -> set[str]:
    """The verbs of a stack command: the labels of its top-level `case $1 in`."""
    (body,) = re.findall(r"^case \$\{?1(?::-)?\}? in\n(.*?)^esac", script, re.M | re.S)
    return set(re.findall(r"^  ([a-z-]+)\)", body, re.M))


def test_stack_commands_answer_every_verb_the_suite_uses() -> None:
    """Each verb tests/e2e/stack.py runs is answered by both stack commands,
    so that `make e2e` (compose) and `make k8s-test` (Kubernetes) run the
    same suite."""
    suite = (ROOT / "tests" / "e2e" / "stack.py").read_text()
    used = set(re.findall(r'self\.run\(\s*"([a-z-]+)"', suite))
    assert {"token", "scale", "broadcasters", "metrics", "restart"} <= used, used
    for name, path in STACK_COMMANDS.items():
        answered = verbs_answered(path.read_text())
        # A cluster's stack is always one the suite didn't start (k8s-test deploys it).
        expected = used - {"up", "down"} if name == "kubernetes" else used
        assert expected <= answered, f"{path.name} lacks {sorted(expected - answered)}"

"""Reading the three sides the tests compare: the manifests, compose.yaml, the programs.

The programs' settings are read from their source, not imported: the tests
run without Django (make k8s-check, from k8s/.venv).
"""

from __future__ import annotations

import ast
import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
#: The demo Django project (package ``web``) and the edge's configuration.
SERVICES = ROOT / "services"
#: The installable package, ``live_notifications``: the app, the relay, the
#: broadcaster and the modules they share.
SRC = ROOT / "src"
PACKAGE = SRC / "live_notifications"
#: The image the programs run in, built from the repository's root.
DOCKERFILE = SERVICES / "web" / "Dockerfile"
#: Where the package declares its console scripts ([project.scripts]).
PYPROJECT = ROOT / "pyproject.toml"
K8S = ROOT / "k8s"

#: Every kustomization a user may apply for the product, by the name the tests use.
OVERLAYS = {
    "base": K8S,
    "local": K8S / "overlays" / "local",
    "production": K8S / "overlays" / "production",
}
#: The namespace's own kustomization, applied once before any of them.
NAMESPACE_KUSTOMIZATION = K8S / "namespace"
COMPONENTS = K8S / "components"
#: The overlays that run PostgreSQL and Redis in the cluster, as compose does.
SELF_CONTAINED = ("base", "local")
#: The image compose builds, which the manifests name.
APP_IMAGE = "django-realtime-notifications/app:dev"
#: The name of every app container's metrics port.
METRICS = "metrics"

#: The modules each program's environment is read in, by compose service,
#: besides the package's and the project's modules they import
#: (:func:`program_modules`). Each is named as imported, relative to the root
#: its package lives in (:data:`PACKAGE_ROOTS`). The broadcaster, the relay
#: and the migrations load the Django settings too; the migrations run as
#: `django-admin migrate_when_ready`, the management command.
SETTINGS = ["web/settings/base.py", "web/settings/production.py"]
PROGRAMS = {
    "web": [*SETTINGS, "web/wsgi.py", "web/gunicorn_conf.py"],
    "broadcaster": [
        *SETTINGS,
        "live_notifications/broadcaster/__main__.py",
        "live_notifications/broadcaster/config.py",
    ],
    "relay": [
        *SETTINGS,
        "live_notifications/relay/__main__.py",
        "live_notifications/relay/config.py",
    ],
    "migrate": [
        *SETTINGS,
        "live_notifications/management/commands/migrate_when_ready.py",
    ],
}
#: What a program's launcher reads before any module of ours runs, with its
#: default (None: required). django-admin (Django's own, unlike manage.py)
#: has no default settings module.
LAUNCHER_READS: dict[str, dict[str, ast.expr | None]] = {
    "migrate": {"DJANGO_SETTINGS_MODULE": None},
}
#: Modules that read the environment though no container runs them:
#: test_parity.py checks that no command of compose.yaml or the manifests
#: names them. manage.py is the demo project's command line, for developers
#: and the image's build (collectstatic); the containers run django-admin.
NOT_RUN = {"web/manage.py"}

Manifest = dict[str, Any]


# The manifests.


def find(docs: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{len(matches)} {kind} named {name}"
    return matches[0]


def maybe_find(docs: list[Manifest], kind: str, name: str) -> Manifest | None:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return matches[0] if matches else None


def pod_spec(workload: Manifest) -> Manifest:
    spec: Manifest = workload["spec"]["template"]["spec"]
    return spec


def workloads(docs: list[Manifest]) -> Iterator[Manifest]:
    """Every object with a pod template."""
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet", "CronJob"}:
            yield doc


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """A label selector's verdict: matchLabels and matchExpressions."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, values = expression["key"], expression.get("values", [])
        verdict = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[expression["operator"]]
        if not verdict:
            return False
    return True


def pod_labels(workload: Manifest) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def selected(docs: list[Manifest], selector: Manifest) -> list[Manifest]:
    """The workloads whose pods ``selector`` (a label selector) selects."""
    return [w for w in workloads(docs) if selects(selector, pod_labels(w))]


def container_ports(box: Manifest) -> dict[str, int]:
    """A container's ports, name to number (unnamed ones by their number)."""
    return {
        str(port.get("name", port["containerPort"])): port["containerPort"]
        for port in box.get("ports", [])
    }


def containers(workload: Manifest, *, init: bool = True) -> list[Manifest]:
    spec = pod_spec(workload)
    found: list[Manifest] = spec["containers"]
    return [*spec.get("initContainers", []), *found] if init else found


def container(workload: Manifest, name: str) -> Manifest:
    (found,) = [c for c in containers(workload) if c["name"] == name]
    return found


def environment(
    docs: list[Manifest], template: dict[str, dict[str, str]], box: Manifest
) -> dict[str, str | None]:
    """The variables a container gets, with their values where the manifests hold them.

    Secrets the overlay doesn't generate are the ones users create from the
    template: their keys come from there (values ``None``: the user's).
    """
    env: dict[str, str | None] = {}
    for source in box.get("envFrom", []):
        if "configMapRef" in source:
            data = find(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
            env.update(data)
        else:
            env.update(_secret(docs, template, source["secretRef"]["name"]))
    for variable in box.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = _secret(docs, template, ref["name"])[ref["key"]]
    return env


def _secret(
    docs: list[Manifest], template: dict[str, dict[str, str]], name: str
) -> dict[str, str | None]:
    generated = maybe_find(docs, "Secret", name)
    if generated is not None:
        return {k: base64.b64decode(v).decode() for k, v in generated["data"].items()}
    assert name in template, f"Secret {name} is neither generated nor in the template"
    return dict.fromkeys(template[name])


# The kustomizations.


def kustomization(path: Path) -> Manifest:
    found: Manifest = yaml.safe_load((path / "kustomization.yaml").read_text())
    return found


def components_of(path: Path) -> set[str]:
    """The components a kustomization uses, by folder name, its bases' too."""
    spec = kustomization(path)
    found = {Path(component).name for component in spec.get("components", [])}
    for resource in spec.get("resources", []):
        if (path / resource).is_dir():
            found |= components_of((path / resource).resolve())
    return found


#: The base's edge setting: ingress-nginx's controller pods, as its Helm
#: chart deploys them (namespace ingress-nginx).
INGRESS_PEER: Manifest = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
}


def edge_setting(overlay: str) -> Manifest:
    """An overlay's edge setting: ``{"gateway": parentRef, "peer": NetworkPolicy peer}``.

    With components/gateway-api, the spec of the overlay's Edge object (local
    to kustomize: not in the rendered output, so read from the overlay's
    files); otherwise the base's ingress-nginx peer, with no Gateway.
    """
    path = OVERLAYS[overlay]
    if "gateway-api" not in components_of(path):
        return {"gateway": None, "peer": INGRESS_PEER}
    edges = [
        doc
        for resource in kustomization(path).get("resources", [])
        if (path / resource).is_file()
        for doc in yaml.safe_load_all((path / resource).read_text())
        if doc and doc["kind"] == "Edge"
    ]
    assert len(edges) == 1, f"{path} has {len(edges)} Edge objects"
    assert edges[0]["metadata"]["annotations"]["config.kubernetes.io/local-config"] == "true"
    spec: Manifest = edges[0]["spec"]
    return spec


# compose.yaml.


_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*)|:\?[^}]*)?\}")


def interpolate(value: str) -> str:
    """A compose value with its defaults: ``${X:-d}`` is d, a required ``${X:?…}`` is <X>."""
    return _VARIABLE.sub(
        lambda m: m.group(2) if m.group(2) is not None else f"<{m.group(1)}>", value
    )


def compose_environment(service: Manifest) -> dict[str, str]:
    return {name: interpolate(str(value)) for name, value in service.get("environment", {}).items()}


# The programs.


#: live_notifications/shared/environment.py's readers: ``environment.integer("NAME", default)``.
READERS = {"string", "integer", "number", "boolean", "string_list"}


def reads(path: Path) -> dict[str, ast.expr | None]:
    """Variables a module reads, with the default it gives each (None: required).

    Finds ``environment.<reader>("NAME", …)`` and ``os.environ.get/setdefault``
    calls with a literal name.
    """
    found: dict[str, ast.expr | None] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            continue
        owner = node.func.value
        helper = (
            isinstance(owner, ast.Name) and owner.id == "environment" and node.func.attr in READERS
        )
        environ = isinstance(owner, ast.Attribute) and owner.attr == "environ"
        if helper or environ:
            found[node.args[0].value] = node.args[1] if len(node.args) > 1 else None
    return found


#: The packages whose imports the programs' modules follow, and the folder
#: each lives in: the installed package, and the demo project (PYTHONPATH).
PACKAGE_ROOTS = {"live_notifications": SRC, "web": SERVICES}


def source(module: str) -> Path:
    """The file of a module named as in :data:`PROGRAMS` (``web/wsgi.py``)."""
    return PACKAGE_ROOTS[module.split("/")[0].removesuffix(".py")] / module


def program_modules(service: str) -> list[str]:
    """PROGRAMS[service] and the package's and the project's modules they
    import, at any depth.

    Named as in :data:`PROGRAMS`: the relay and the broadcasters read their
    history settings in live_notifications/shared/eventlog.py, for instance.
    """
    found: list[str] = []
    pending = list(PROGRAMS[service])
    while pending:
        module = pending.pop(0)
        if module in found:
            continue
        assert source(module).is_file(), f"{source(module).relative_to(ROOT)} doesn't exist"
        found.append(module)
        for name in _imported(module):
            if name.split(".")[0] not in PACKAGE_ROOTS:
                continue
            stem = name.replace(".", "/")
            for path in (f"{stem}.py", f"{stem}/__init__.py"):
                if source(path).is_file():
                    pending.append(path)
    return found


def _imported(module: str) -> list[str]:
    """The dotted names ``module`` (as in :data:`PROGRAMS`) imports, relative ones resolved."""
    package = module.removesuffix(".py").split("/")[:-1]
    names = []
    for node in ast.walk(ast.parse(source(module).read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            origin = ".".join([*base, *([node.module] if node.module else [])])
            names += [origin, *(f"{origin}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


def every_module_reading_the_environment() -> set[str]:
    """The package's and the project's modules (tests aside) that read a
    variable, named as in :data:`PROGRAMS`."""
    # web/settings/test.py: the settings of the project's test suite.
    tests_only = {"conftest.py", "test.py"}
    return {
        str(path.relative_to(root))
        for package, root in PACKAGE_ROOTS.items()
        for path in (root / package).rglob("*.py")
        if "tests" not in path.relative_to(root).parts
        and path.name not in tests_only
        and reads(path)
    }


def literal(node: ast.expr | None) -> Any:
    """The value of a default written as a literal (``ast.literal_eval``)."""
    assert node is not None
    return ast.literal_eval(node)


def module_constant(path: Path, name: str) -> Any:
    """A module-level ``NAME = <literal>`` of a program's source."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path} has no constant {name}")

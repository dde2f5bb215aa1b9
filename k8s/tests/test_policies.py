"""What every overlay promises beyond parity: the "restricted" Pod Security
Standard in every pod and container, no service account token, no injected
service variables, the recommended labels kept out of selectors, and the
network policies, evaluated: who may connect to which port of whom."""

from __future__ import annotations

import dataclasses
import re

import pytest
from manifests import (
    DOCKERFILE,
    INGRESS_PEER,
    K8S,
    METRICS,
    OVERLAYS,
    SELF_CONTAINED,
    Manifest,
    components_of,
    container_ports,
    containers,
    edge_setting,
    find,
    pod_labels,
    pod_spec,
    selects,
)
from manifests import workloads as all_workloads

#: The app image's user (services/web/Dockerfile).
APP_UID = 10001
#: The seccomp profiles the restricted standard allows.
SECCOMP_PROFILES = {"RuntimeDefault", "Localhost"}


def weakenings(context: Manifest, *, pod: bool) -> list[str]:
    """What in a pod's or container's securityContext falls short of the
    restricted standard (or of this project's stricter rules), as messages.

    A container inherits its pod's settings and may override them: an
    override that weakens one is refused here whatever the pod says.
    https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted
    """
    found = []
    if context.get("runAsNonRoot") is False or (pod and context.get("runAsNonRoot") is not True):
        found.append("runAsNonRoot is not true")
    if context.get("runAsUser") == 0 or (pod and not context.get("runAsUser")):
        found.append("runs as root (runAsUser 0 or unset)")
    profile = context.get("seccompProfile", {}).get("type")
    if (profile is not None or pod) and profile not in SECCOMP_PROFILES:
        found.append(f"seccompProfile {profile}")
    if context.get("appArmorProfile", {}).get("type") == "Unconfined":
        found.append("appArmorProfile Unconfined")
    if context.get("windowsOptions", {}).get("hostProcess"):
        found.append("hostProcess")
    if "seLinuxOptions" in context:
        found.append("seLinuxOptions set")
    if pod:
        return found
    if context.get("privileged"):
        found.append("privileged")
    if context.get("allowPrivilegeEscalation") is not False:
        found.append("allowPrivilegeEscalation is not false")
    capabilities = context.get("capabilities", {})
    if capabilities.get("add"):
        found.append(f"capabilities added: {capabilities['add']}")
    if capabilities.get("drop") != ["ALL"]:
        found.append("capabilities not all dropped")
    if context.get("procMount", "Default") != "Default":
        found.append("procMount")
    if context.get("readOnlyRootFilesystem") is not True:
        found.append("root filesystem writable")
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_and_container_is_restricted(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    for workload in all_workloads(rendered[overlay]):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert not weakenings(spec["securityContext"], pod=True), name
        assert not any(spec.get(key) for key in ("hostNetwork", "hostPID", "hostIPC")), name
        for volume in spec.get("volumes", []):
            assert volume.keys() - {"name"} <= {"emptyDir", "configMap", "secret", "projected"}
        for box in containers(workload):
            where = f"{name}/{box['name']}"
            assert not weakenings(box.get("securityContext", {}), pod=False), where
            assert not any("hostPort" in port for port in box.get("ports", [])), where
            assert box["resources"]["requests"] and box["resources"]["limits"], where


def test_weakenings_are_seen() -> None:
    # What test_every_pod_and_container_is_restricted relies on: each weakening,
    # alone, in an otherwise restricted context.
    pod = {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    box = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert not weakenings(pod, pod=True)
    assert not weakenings(box, pod=False)
    for change in (
        {"runAsNonRoot": False},
        {"runAsUser": 0},
        {"seccompProfile": {"type": "Unconfined"}},
        {"appArmorProfile": {"type": "Unconfined"}},
    ):
        assert weakenings({**pod, **change}, pod=True), change
        assert weakenings({**box, **change}, pod=False), change
    for change in (
        {"privileged": True},
        {"allowPrivilegeEscalation": True},
        {"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}},
        {"capabilities": {}},
        {"procMount": "Unmasked"},
        {"readOnlyRootFilesystem": False},
    ):
        assert weakenings({**box, **change}, pod=False), change
    assert weakenings({}, pod=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_app_runs_as_the_images_user(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    dockerfile = DOCKERFILE.read_text()
    assert f"--uid {APP_UID}" in dockerfile
    assert f"USER {APP_UID}:{APP_UID}" in dockerfile
    for name in ("web", "broadcaster", "relay"):
        pod = pod_spec(find(rendered[overlay], "Deployment", name))["securityContext"]
        assert pod["runAsUser"] == pod["runAsGroup"] == APP_UID, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_service_account_token(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    for doc in rendered[overlay]:
        if doc["kind"] == "ServiceAccount":
            assert doc["automountServiceAccountToken"] is False, doc["metadata"]["name"]
    for workload in all_workloads(rendered[overlay]):
        spec = pod_spec(workload)
        assert spec["automountServiceAccountToken"] is False
        find(rendered[overlay], "ServiceAccount", spec["serviceAccountName"])


def injected_variables(service: str, ports: list[Manifest]) -> set[str]:
    """What Kubernetes puts in a pod's environment for a Service, unless told not to."""
    prefix = service.upper().replace("-", "_")
    names = {f"{prefix}_SERVICE_HOST", f"{prefix}_SERVICE_PORT", f"{prefix}_PORT"}
    for port in ports:
        names |= {f"{prefix}_PORT_{port['port']}_TCP{suffix}" for suffix in ("", "_PROTO")}
        names |= {f"{prefix}_PORT_{port['port']}_TCP_{suffix}" for suffix in ("PORT", "ADDR")}
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_service_variables_in_the_programs_way(
    rendered: dict[str, list[Manifest]],
    program_reads: dict[str, dict[str, object]],
    overlay: str,
) -> None:
    # The Services web and broadcaster would give every pod WEB_PORT and
    # BROADCASTER_PORT=tcp://…, which the programs read as port numbers.
    read = {name for names in program_reads.values() for name in names}
    injected = set()
    for doc in rendered[overlay]:
        if doc["kind"] == "Service":
            injected |= injected_variables(doc["metadata"]["name"], doc["spec"]["ports"])
    assert {"WEB_PORT", "BROADCASTER_PORT"} <= injected & read
    for workload in all_workloads(rendered[overlay]):
        assert pod_spec(workload)["enableServiceLinks"] is False, workload["metadata"]["name"]


def selector_keys(selector: Manifest) -> set[str]:
    keys = set(selector.get("matchLabels", {}))
    return keys | {expression["key"] for expression in selector.get("matchExpressions", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_recommended_labels_stay_out_of_selectors(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    # Objects of the namespace as a whole have no app.kubernetes.io/name.
    shared = {"ConfigMap", "Secret", "NetworkPolicy/default-deny-ingress"}
    for doc in rendered[overlay]:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "django-realtime-notifications"
        if not {doc["kind"], f"{doc['kind']}/{doc['metadata']['name']}"} & shared:
            assert re.fullmatch(r"[a-z]+", labels["app.kubernetes.io/name"]), doc["kind"]
        spec = doc.get("spec", {})
        if doc["kind"] == "Service":
            assert list(spec["selector"]) == ["app.kubernetes.io/name"]
        else:
            for selector in (spec.get("selector"), spec.get("podSelector")):
                if selector:  # the default deny's {} selects every pod
                    assert selector_keys(selector) == {"app.kubernetes.io/name"}, doc["kind"]
        if "template" in spec:
            template = spec["template"]["metadata"]["labels"]
            assert template.items() >= spec["selector"].get("matchLabels", {}).items()
            assert template["app.kubernetes.io/part-of"] == "django-realtime-notifications"


# The network policies, evaluated: who may open a connection to whom.


@dataclasses.dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str]
    #: Its containers' ports, name to number.
    ports: dict[str, int] = dataclasses.field(default_factory=dict)


def peer_pod(peer: Manifest) -> Pod:
    """A pod that a policy peer of one namespace and exact labels designates."""
    namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    return Pod(namespace, dict(peer["podSelector"]["matchLabels"]))


#: Prometheus' pods (components/monitoring's default).
PROMETHEUS = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
#: ingress-nginx's controller pods, the base's edge.
INGRESS_NGINX = Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})


def outsiders(overlay: str) -> dict[str, Pod]:
    """Pods that may try, beside ours: the overlay's edge (its setting), other
    edges, Prometheus, a pod of this namespace that is none of ours, and one
    with the edge's labels in another namespace."""
    edge = peer_pod(edge_setting(overlay)["peer"])
    return {
        "edge": edge,
        "ingress-nginx": INGRESS_NGINX,
        "prometheus": PROMETHEUS,
        "stranger": Pod("notifications", {"app.kubernetes.io/name": "stranger"}),
        "impostor": Pod("elsewhere", edge.labels),
    }


def reached_by(overlay: str) -> dict[tuple[str, str], set[str]]:
    """Who reaches each port of each of our pods that listen, by pod and port name.

    The edge reaches the site and the WebSocket ports only; Prometheus the
    metrics ports, with components/monitoring; nothing the relay's probes.
    """
    edge = {"edge"} | (
        {"ingress-nginx"} if edge_setting(overlay)["peer"] == INGRESS_PEER else set()
    )
    scrapers = {"prometheus"} if "monitoring" in components_of(OVERLAYS[overlay]) else set()
    expected = {
        ("web", "http"): edge,
        ("web", METRICS): scrapers,
        ("broadcaster", "ws"): edge,
        ("broadcaster", METRICS): scrapers,
        ("relay", "http"): set(),
        ("relay", METRICS): scrapers,
    }
    if overlay in SELF_CONTAINED:
        apps = {"web", "broadcaster", "relay"}
        expected |= {("db", "postgres"): apps, ("redis", "redis"): apps}
    return expected


def pods(docs: list[Manifest]) -> dict[str, Pod]:
    """The pods of every workload, by app.kubernetes.io/name."""
    found = {}
    for workload in all_workloads(docs):
        ports = {
            name: number
            for box in containers(workload, init=False)
            for name, number in container_ports(box).items()
        }
        labels = pod_labels(workload)
        found[labels["app.kubernetes.io/name"]] = Pod(
            workload["metadata"]["namespace"], labels, ports
        )
    return found


def policy_types(policy: Manifest) -> list[str]:
    spec = policy["spec"]
    default = ["Ingress", *(["Egress"] if "egress" in spec else [])]
    types: list[str] = spec.get("policyTypes", default)
    return types


def lets(docs: list[Manifest], direction: str, pod: Pod, peer: Pod, port: tuple[str, int]) -> bool:
    """Whether ``pod``'s policies let a TCP connection in from ``peer`` (Ingress)
    or out to it (Egress), to the peer's or pod's ``port`` (name, number)."""
    policies = [
        doc
        for doc in docs
        if doc["kind"] == "NetworkPolicy"
        and doc["metadata"]["namespace"] == pod.namespace
        and direction in policy_types(doc)
        and selects(doc["spec"]["podSelector"], pod.labels)
    ]
    if not policies:
        return True  # not isolated in that direction
    for policy in policies:
        for rule in policy["spec"].get(direction.lower()) or []:
            peers = rule.get("from" if direction == "Ingress" else "to")
            ports = rule.get("ports")
            if peers and not any(matches(entry, peer, pod.namespace) for entry in peers):
                continue
            if ports and not any(
                entry.get("protocol", "TCP") == "TCP" and entry.get("port", port[0]) in port
                for entry in ports
            ):
                continue
            return True
    return False


def matches(entry: Manifest, peer: Pod, namespace: str) -> bool:
    """Whether a policy's peer entry (in ``namespace``) designates ``peer``."""
    if "ipBlock" in entry:
        return False  # pods are designated by selectors here
    if "namespaceSelector" in entry:
        labels = {"kubernetes.io/metadata.name": peer.namespace}
        if not selects(entry["namespaceSelector"], labels):
            return False
    elif peer.namespace != namespace:
        return False
    return selects(entry.get("podSelector", {}), peer.labels)


def reaches(docs: list[Manifest], client: Pod, server: Pod, port: tuple[str, int]) -> bool:
    return lets(docs, "Egress", client, server, port) and lets(
        docs, "Ingress", server, client, port
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    docs = rendered[overlay]
    deny = find(docs, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    ours = pods(docs)
    expected = reached_by(overlay)
    listening = {(name, port) for name, pod in ours.items() for port in pod.ports}
    assert listening == set(expected)
    clients = {**ours, **outsiders(overlay)}
    for (name, port), allowed in expected.items():
        server = ours[name]
        reached = {
            client
            for client, pod in clients.items()
            if client != name and reaches(docs, pod, server, (port, server.ports[port]))
        }
        assert reached == allowed, f"{name}:{port} is reached by {sorted(reached)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_edge_is_one_setting(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    # One policy admits the edge, from the overlay's edge setting: the base's
    # ingress-nginx peer, or the Edge object components/gateway-api reads.
    # No other policy names another namespace but Prometheus'.
    setting = edge_setting(overlay)
    if "gateway-api" not in components_of(OVERLAYS[overlay]):
        assert setting["peer"] == INGRESS_PEER
    policies = [d for d in rendered[overlay] if d["kind"] == "NetworkPolicy"]
    admitting = {
        policy["metadata"]["name"]: entry
        for policy in policies
        for rule in policy["spec"].get("ingress") or []
        for entry in rule.get("from", [])
        if "namespaceSelector" in entry
    }
    assert admitting.pop("from-edge") == setting["peer"]
    # The routes attach to the setting's Gateway; ingress-nginx's have none.
    routes = [d for d in rendered[overlay] if d["kind"] == "HTTPRoute"]
    ingresses = [d for d in rendered[overlay] if d["kind"] == "Ingress"]
    expected = (True, False) if setting["gateway"] else (False, True)
    assert (bool(routes), bool(ingresses)) == expected
    for route in routes:
        assert route["spec"]["parentRefs"] == [setting["gateway"]], route["metadata"]["name"]
    # Envoy Gateway's proxies say which Gateway they run: the routes' one.
    labels = setting["peer"]["podSelector"]["matchLabels"]
    for field in ("name", "namespace"):
        label = labels.get(f"gateway.envoyproxy.io/owning-gateway-{field}")
        if label is not None:
            assert label == setting["gateway"][field], field
    assert admitting in ({}, {"from-prometheus": admitting.get("from-prometheus")})
    # local-cluster.sh forwards to the controller where the base's edge admits it.
    script = (K8S / "scripts" / "local-cluster.sh").read_text()
    (namespace,) = re.findall(
        r"^INGRESS_NAMESPACE=\$\{K8S_INGRESS_NAMESPACE:-(\S+)\}$", script, re.M
    )
    assert (
        namespace == INGRESS_PEER["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    )


def test_the_evaluator_sees_what_policies_allow() -> None:
    # reaches() on made-up pods and policies, both directions: what
    # test_network_policies relies on, egress included (no overlay has any).
    def policy(name: str, spec: Manifest) -> Manifest:
        return {
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": spec,
        }

    def named(name: str) -> Manifest:
        return {"matchLabels": {"app.kubernetes.io/name": name}}

    server = Pod("ns", {"app.kubernetes.io/name": "server"}, {"db": 5432, "admin": 8080})
    client = Pod("ns", {"app.kubernetes.io/name": "client"})
    other = Pod("ns", {"app.kubernetes.io/name": "other"})
    elsewhere = Pod("elsewhere", {"app.kubernetes.io/name": "client"})
    db, admin = ("db", 5432), ("admin", 8080)
    assert reaches([], other, server, db)  # no policy: not isolated
    entry = {
        "podSelector": {
            "matchExpressions": [
                {"key": "app.kubernetes.io/name", "operator": "In", "values": ["client"]}
            ]
        }
    }
    docs = [
        policy(
            "server",
            {
                "podSelector": named("server"),
                "ingress": [{"from": [entry], "ports": [{"port": "db"}]}],
            },
        )
    ]
    assert reaches(docs, client, server, db)
    assert not reaches(docs, client, server, admin)
    assert not reaches(docs, other, server, db)
    assert not reaches(docs, elsewhere, server, db)
    closed = policy("client", {"podSelector": named("client"), "policyTypes": ["Egress"]})
    assert not reaches([*docs, closed], client, server, db)
    out = {
        "podSelector": named("client"),
        "egress": [{"to": [{"podSelector": named("server")}], "ports": [{"port": 5432}]}],
    }
    assert reaches([*docs, closed, policy("out", out)], client, server, db)
    # A peer in another namespace, by namespace and labels.
    remote = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "elsewhere"}},
        "podSelector": named("client"),
    }
    opened = policy("server", {"podSelector": named("server"), "ingress": [{"from": [remote]}]})
    assert reaches([opened], elsewhere, server, admin)
    assert not reaches([opened], client, server, admin)


def test_production_leaves_egress_open(rendered: dict[str, list[Manifest]]) -> None:
    # Its PostgreSQL and Redis are managed ones, wherever they are: no policy
    # may keep web, the broadcasters or the relay from reaching them.
    for doc in rendered["production"]:
        if doc["kind"] == "NetworkPolicy":
            assert "Egress" not in policy_types(doc), doc["metadata"]["name"]

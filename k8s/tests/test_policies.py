"""What every overlay promises beyond parity: the "restricted" Pod Security
Standard, no service account token, no injected service variables, the
recommended labels kept out of selectors, the network policies."""

from __future__ import annotations

import dataclasses
import re

import pytest
from manifests import OVERLAYS, SELF_CONTAINED, SERVICES, Manifest, containers, find, pod_spec
from manifests import workloads as all_workloads

#: The app image's user (services/Dockerfile).
APP_UID = 10001


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespace_enforces_the_restricted_standard(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    (namespace,) = [d for d in rendered[overlay] if d["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in rendered[overlay]:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_restricted(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    # https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted
    for workload in all_workloads(rendered[overlay]):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] > 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert not {"hostNetwork", "hostPID", "hostIPC"} & spec.keys(), name
        for volume in spec.get("volumes", []):
            assert volume.keys() - {"name"} <= {"emptyDir", "configMap", "secret", "projected"}
        for box in containers(workload):
            context = box["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, (name, box["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (name, box["name"])
            assert "add" not in context["capabilities"], (name, box["name"])
            assert context["readOnlyRootFilesystem"] is True, (name, box["name"])
            assert not {"privileged", "runAsUser", "procMount"} & context.keys()
            assert not any("hostPort" in port for port in box.get("ports", []))
            assert box["resources"]["requests"] and box["resources"]["limits"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_app_runs_as_the_images_user(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    dockerfile = (SERVICES / "Dockerfile").read_text()
    assert f"--uid {APP_UID}" in dockerfile
    assert f"USER {APP_UID}:{APP_UID}" in dockerfile
    app = ("Deployment", "web"), ("Deployment", "broadcaster"), ("Deployment", "relay")
    for kind, name in (*app, ("Job", "migrate")):
        pod = pod_spec(find(rendered[overlay], kind, name))["securityContext"]
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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_recommended_labels_stay_out_of_selectors(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    # Objects of the namespace as a whole have no app.kubernetes.io/name.
    shared = {"Namespace", "ConfigMap", "Secret", "NetworkPolicy/default-deny-ingress"}
    for doc in rendered[overlay]:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "django-realtime-notifications"
        if not {doc["kind"], f"{doc['kind']}/{doc['metadata']['name']}"} & shared:
            assert re.fullmatch(r"[a-z]+", labels["app.kubernetes.io/name"]), doc["kind"]
        selector = doc.get("spec", {}).get("selector")
        if doc["kind"] == "Service":
            assert list(selector) == ["app.kubernetes.io/name"]
        elif selector is not None:
            assert list(selector["matchLabels"]) == ["app.kubernetes.io/name"]
        if "template" in doc.get("spec", {}):
            template = doc["spec"]["template"]["metadata"]["labels"]
            # A Job's selector is the controller's: none in the manifest.
            assert template.items() >= (selector or {}).get("matchLabels", {}).items()
            assert template["app.kubernetes.io/part-of"] == "django-realtime-notifications"


# The network policies, evaluated: who may open a connection to whom.


@dataclasses.dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str]
    #: Its containers' ports, name to number.
    ports: dict[str, int] = dataclasses.field(default_factory=dict)


#: Pods of other namespaces that may try: the ingress controller, which the
#: policies admit to web and the broadcasters, and a Prometheus, which they
#: don't (k8s/README.md: add a rule for it). And a pod of this namespace that
#: is none of ours.
OUTSIDERS = {
    "ingress-nginx": Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
    "prometheus": Pod("monitoring", {"app.kubernetes.io/name": "prometheus"}),
    "stranger": Pod("notifications", {"app.kubernetes.io/name": "stranger"}),
}
#: Who reaches each pod that listens, on every one of its ports. The relay
#: only connects out, to PostgreSQL and Redis; nothing connects to it.
REACHED_BY = {
    "web": {"ingress-nginx"},
    "broadcaster": {"ingress-nginx"},
    "relay": set(),
    "db": {"web", "broadcaster", "relay", "migrate"},
    "redis": {"web", "broadcaster", "relay"},
}


def pods(docs: list[Manifest]) -> dict[str, Pod]:
    """The pods of every workload, by app.kubernetes.io/name."""
    found = {}
    for workload in all_workloads(docs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        ports = {
            port["name"]: port["containerPort"]
            for box in containers(workload, init=False)
            for port in box.get("ports", [])
        }
        found[labels["app.kubernetes.io/name"]] = Pod(
            workload["metadata"]["namespace"], labels, ports
        )
    return found


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
    listening = {name for name, pod in ours.items() if pod.ports}
    expected = REACHED_BY.keys() - (set() if overlay in SELF_CONTAINED else {"db", "redis"})
    assert listening == expected
    for name in listening:
        # Each has a policy of its own (its file's), beside the default deny.
        policy = find(docs, "NetworkPolicy", name)["spec"]["podSelector"]
        assert policy == {"matchLabels": {"app.kubernetes.io/name": name}}
        for port in ours[name].ports.items():
            clients = {**ours, **OUTSIDERS}
            reached = {
                client
                for client, pod in clients.items()
                if client != name and reaches(docs, pod, ours[name], port)
            }
            assert reached == REACHED_BY[name], f"{name}:{port[0]} is reached by {sorted(reached)}"


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


def test_production_leaves_egress_open(rendered: dict[str, list[Manifest]]) -> None:
    # Its PostgreSQL and Redis are managed ones, wherever they are: no policy
    # may keep web, the broadcasters or the relay from reaching them.
    for doc in rendered["production"]:
        if doc["kind"] == "NetworkPolicy":
            assert "Egress" not in policy_types(doc), doc["metadata"]["name"]

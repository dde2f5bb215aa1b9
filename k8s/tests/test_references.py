"""Every reference between objects leads somewhere, in every rendered overlay.

Routes to Services and their ports, Services to the pods' ports, network
policies to the pods and ports they name, pods to the ConfigMaps and Secrets
they read, probes to the ports they check. A name changed on one side only
(a label, a port name) renders and validates fine, and fails here. And the
metrics ports stay behind: on no Service, so on no route.
"""

from __future__ import annotations

import re

import pytest
from manifests import (
    COMPONENTS,
    K8S,
    METRICS,
    NAMESPACE_KUSTOMIZATION,
    OVERLAYS,
    ROOT,
    Manifest,
    components_of,
    container_ports,
    containers,
    find,
    maybe_find,
    pod_spec,
    selected,
    workloads,
)

#: Kinds whose pods run for good: each of their containers is probed.
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet"}


def service_ports(service: Manifest) -> list[Manifest]:
    ports: list[Manifest] = service["spec"]["ports"]
    return ports


def backends(docs: list[Manifest]) -> list[tuple[str, str, str | int]]:
    """Every route's backend: (route, Service name, port name or number)."""
    found: list[tuple[str, str, str | int]] = []
    for doc in docs:
        route = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Ingress":
            for rule in doc["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    service = path["backend"]["service"]
                    port = service["port"]
                    found.append((route, service["name"], port.get("name", port.get("number"))))
        elif doc["kind"] == "HTTPRoute":
            for rule in doc["spec"]["rules"]:
                for ref in rule["backendRefs"]:
                    assert ref.get("group", "") == "" and ref.get("kind", "Service") == "Service"
                    assert (
                        ref.get("namespace", doc["metadata"]["namespace"])
                        == (doc["metadata"]["namespace"])
                    ), route
                    found.append((route, ref["name"], ref["port"]))
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_routes_lead_to_a_service_port(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    docs = rendered[overlay]
    routes = backends(docs)
    assert routes, f"{overlay} has no edge"
    for route, name, port in routes:
        service = maybe_find(docs, "Service", name)
        assert service is not None, f"{route}: no Service {name}"
        # An Ingress names a Service port by name or number, an HTTPRoute by number.
        key = "name" if isinstance(port, str) else "port"
        assert port in {p.get(key) for p in service_ports(service)}, (
            f"{route}: {name} has no {port}"
        )


def target(service: Manifest, port: Manifest, workload: Manifest) -> tuple[str, int] | None:
    """The container port (name, number) a Service port leads to in a workload's pods."""
    wanted = port.get("targetPort", port["port"])
    for box in containers(workload, init=False):
        for name, number in container_ports(box).items():
            if wanted in (name, number):
                return name, number
    return None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_lead_to_container_ports(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    docs = rendered[overlay]
    for service in (d for d in docs if d["kind"] == "Service"):
        name = service["metadata"]["name"]
        pods = selected(docs, {"matchLabels": service["spec"]["selector"]})
        assert pods, f"Service {name} selects no pod"
        for port in service_ports(service):
            for workload in pods:
                assert target(service, port, workload), f"Service {name}: {port} leads nowhere"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_ports_are_on_no_service(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    # So no route of any edge (ours or one a user adds) can publish them.
    docs = rendered[overlay]
    for name in ("web", "broadcaster", "relay"):
        (box,) = containers(find(docs, "Deployment", name), init=False)
        assert METRICS in container_ports(box), f"{name} has no port {METRICS}"
    for service in (d for d in docs if d["kind"] == "Service"):
        for workload in selected(docs, {"matchLabels": service["spec"]["selector"]}):
            for port in service_ports(service):
                reached = target(service, port, workload)
                assert reached and reached[0] != METRICS, service["metadata"]["name"]
                assert port.get("name") != METRICS, service["metadata"]["name"]
    for route, _, port in backends(docs):
        assert port != METRICS, route


def policy_ports(policy: Manifest) -> list[str | int]:
    return [
        entry["port"]
        for rule in policy["spec"].get("ingress") or []
        for entry in rule.get("ports", [])
        if "port" in entry
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_name_existing_pods_and_ports(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    docs = rendered[overlay]
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        name = policy["metadata"]["name"]
        pods = selected(docs, policy["spec"]["podSelector"])
        assert pods, f"NetworkPolicy {name} selects no pod"
        # A named port resolves in each selected pod: it must exist in one.
        declared = {
            port
            for workload in pods
            for box in containers(workload, init=False)
            for item in container_ports(box).items()
            for port in item
        }
        for port in policy_ports(policy):
            assert port in declared, f"NetworkPolicy {name}: no selected pod has port {port}"
        # Peers of this namespace (no namespaceSelector) are pods of ours.
        for rule in policy["spec"].get("ingress") or []:
            for peer in rule.get("from", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    assert selected(docs, peer["podSelector"]), f"{name}: {peer} selects no pod"


def config_references(workload: Manifest) -> list[tuple[str, str, str | None]]:
    """What a pod reads from ConfigMaps and Secrets: (kind, name, key or None)."""
    found: list[tuple[str, str, str | None]] = []
    for box in containers(workload):
        for source in box.get("envFrom", []):
            for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if field in source:
                    found.append((kind, source[field]["name"], None))
        for variable in box.get("env", []):
            for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                ref = variable.get("valueFrom", {}).get(field)
                if ref:
                    found.append((kind, ref["name"], ref["key"]))
    for volume in pod_spec(workload).get("volumes", []):
        sources = [volume, *volume.get("projected", {}).get("sources", [])]
        for source in sources:
            if "configMap" in source:
                ref = source["configMap"]
                found += [("ConfigMap", ref["name"], i["key"]) for i in ref.get("items", [])]
                found.append(("ConfigMap", ref["name"], None))
            if "secret" in source:
                ref = source["secret"]
                secret = ref.get("secretName", ref.get("name"))
                found += [("Secret", secret, i["key"]) for i in ref.get("items", [])]
                found.append(("Secret", secret, None))
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configuration_references_exist(
    rendered: dict[str, list[Manifest]],
    secret_template: dict[str, dict[str, str]],
    overlay: str,
) -> None:
    # Rendered in the overlay, or a Secret users create from the template.
    docs = rendered[overlay]
    for workload in workloads(docs):
        where = workload["metadata"]["name"]
        for kind, name, key in config_references(workload):
            doc = maybe_find(docs, kind, name)
            if doc is not None:
                keys = set(doc.get("data", {})) | set(doc.get("stringData", {}))
            else:
                assert kind == "Secret" and name in secret_template, f"{where}: no {kind} {name}"
                keys = set(secret_template[name])
            assert key is None or key in keys, f"{where}: {kind} {name} has no key {key}"
        spec = pod_spec(workload)
        volumes = {volume["name"] for volume in spec.get("volumes", [])}
        volumes |= {
            claim["metadata"]["name"] for claim in workload["spec"].get("volumeClaimTemplates", [])
        }
        for box in containers(workload):
            for mount in box.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{where}/{box['name']}: no volume {mount['name']}"


PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_long_running_containers_are_probed_on_their_ports(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    for workload in workloads(rendered[overlay]):
        for box in containers(workload, init=False):
            where = f"{workload['metadata']['name']}/{box['name']}"
            if workload["kind"] in LONG_RUNNING:
                assert {"readinessProbe", "livenessProbe"} <= box.keys(), where
            ports = {port for item in container_ports(box).items() for port in item}
            for probe in (box[name] for name in PROBES if name in box):
                handler = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
                if handler is not None:
                    assert handler["port"] in ports, f"{where}: probes undeclared {handler['port']}"
                else:
                    assert probe["exec"]["command"], where


def test_every_kustomization_users_apply_is_checked() -> None:
    # make k8s-check renders, validates and scans these; k8s/tests renders
    # the same; between them every component is used.
    makefile = (ROOT / "Makefile").read_text()
    (line,) = re.findall(r"^K8S_KUSTOMIZATIONS := (.+)$", makefile, re.M)
    checked = {ROOT / path for path in line.split()}
    overlays = set((K8S / "overlays").iterdir())
    assert checked == {NAMESPACE_KUSTOMIZATION, K8S, *overlays}
    assert set(OVERLAYS.values()) == {K8S, *overlays}
    used = set().union(*(components_of(path) for path in OVERLAYS.values()))
    assert used == {path.name for path in COMPONENTS.iterdir()}

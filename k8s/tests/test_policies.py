"""What every overlay promises beyond parity: the "restricted" Pod Security
Standard, no service account token, no injected service variables, the
recommended labels kept out of selectors, the network policies."""

from __future__ import annotations

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
    for kind, name in (("Deployment", "web"), ("Deployment", "broadcaster"), ("Job", "migrate")):
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


def allowed_sources(docs: list[Manifest], target: str) -> list[Manifest]:
    """The `from` entries of the policies that select ``target``'s pods."""
    sources = []
    for doc in docs:
        if doc["kind"] != "NetworkPolicy":
            continue
        selector = doc["spec"]["podSelector"].get("matchLabels", {})
        if selector.get("app.kubernetes.io/name") == target:
            for rule in doc["spec"].get("ingress", []):
                sources += rule["from"]
    return sources


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    docs = rendered[overlay]
    deny = find(docs, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    # Only the ingress controller reaches web and the broadcasters.
    for target in ("web", "broadcaster"):
        (source,) = allowed_sources(docs, target)
        namespace = source["namespaceSelector"]["matchLabels"]
        assert namespace == {"kubernetes.io/metadata.name": "ingress-nginx"}
    # Only web and the broadcasters (and the migrations, for the database)
    # reach the data stores.
    expected = {"db": ["web", "broadcaster", "migrate"], "redis": ["web", "broadcaster"]}
    for target, clients in expected.items():
        sources = allowed_sources(docs, target)
        if overlay not in SELF_CONTAINED:
            assert sources == []
            continue
        (source,) = sources
        assert set(source) == {"podSelector"}
        (expression,) = source["podSelector"]["matchExpressions"]
        assert expression["key"] == "app.kubernetes.io/name"
        assert expression["operator"] == "In"
        assert expression["values"] == clients

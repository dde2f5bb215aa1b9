"""What running the manifests relies on, beyond parity and policies: the
namespace applied apart, a `kubectl delete -k` that keeps the users' data,
migrations that survive any apply, Redis, the spread in production, the
broadcasters' capacity and autoscaling, verified TLS to managed services,
and local images that are never pulled."""

from __future__ import annotations

import base64
import math
import re

import pytest
from manifests import (
    APP_IMAGE,
    K8S,
    OVERLAYS,
    PACKAGE,
    SELF_CONTAINED,
    Manifest,
    container,
    containers,
    environment,
    find,
    maybe_find,
    pod_spec,
    workloads,
)

APPS = ("web", "broadcaster", "relay")
#: The migrations' command, compose.yaml's `migrate` (test_parity.py).
MIGRATE = ["django-admin", "migrate_when_ready"]
#: Where the production overlay mounts the managed services' CA bundles.
CA_BUNDLES = {
    "database-ca": "/etc/notifications/database-ca",
    "redis-ca": "/etc/notifications/redis-ca",
}


# The namespace, and what `kubectl delete -k` of an overlay deletes.


def unhashed(name: str) -> str:
    """A generated object's name without the hash kustomize appends."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def test_namespace_enforces_the_restricted_standard(namespace: list[Manifest]) -> None:
    (ns,) = namespace
    assert ns["kind"] == "Namespace" and ns["metadata"]["name"] == "notifications"
    labels = ns["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_are_in_the_namespace_and_hold_none_of_the_users_data(
    rendered: dict[str, list[Manifest]],
    namespace: list[Manifest],
    secret_template: dict[str, dict[str, str]],
    overlay: str,
) -> None:
    # `kubectl delete -k` deletes what the overlay renders: never the
    # namespace (and so everything in it), a volume claim, or a Secret that
    # users create (the local overlay's are its own demo values).
    (ns,) = namespace
    for doc in rendered[overlay]:
        assert doc["kind"] not in {"Namespace", "PersistentVolumeClaim"}, doc["kind"]
        assert doc["metadata"]["namespace"] == ns["metadata"]["name"], doc["metadata"]["name"]
        if doc["kind"] == "Secret":
            assert overlay == "local", doc["metadata"]["name"]
            values = [base64.b64decode(v).decode() for v in doc["data"].values()]
            assert any("demo" in value for value in values), doc["metadata"]["name"]
    # The database's claim outlives its StatefulSet.
    db = maybe_find(rendered[overlay], "StatefulSet", "db")
    if overlay in SELF_CONTAINED:
        assert db is not None
        assert db["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    # Nothing with a pod template that an apply can't change.
    assert not {d["kind"] for d in rendered[overlay]} & {"Job", "CronJob"}


# Migrations: in every app pod, before it starts.


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_app_pod_migrates_before_it_starts(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    for name in APPS:
        workload = find(rendered[overlay], "Deployment", name)
        spec = pod_spec(workload)
        (init,) = spec["initContainers"]
        (main,) = spec["containers"]
        assert init["name"] == "migrate", name
        assert [*init["command"], *init.get("args", [])] == MIGRATE, name
        assert init["image"] == main["image"] == APP_IMAGE, name
        # What the migrations read: the app settings and secrets, nothing else.
        sources = [
            (kind, unhashed(ref["name"])) for s in init["envFrom"] for kind, ref in s.items()
        ]
        assert sources == [("configMapRef", "app-config"), ("secretRef", "app-secrets")], name
        assert "env" not in init, name
        # The files the database connection names (CA bundles) too.
        needed = [m for m in main.get("volumeMounts", []) if m["mountPath"].startswith("/etc/")]
        assert needed == init.get("volumeMounts", []), name
        # A failing migration stalls the rollout: the old pods keep serving.
        assert workload["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name


# Redis.


@pytest.mark.parametrize("overlay", SELF_CONTAINED)
def test_redis_is_recreated_with_a_password(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    docs = rendered[overlay]
    redis = find(docs, "Deployment", "redis")
    assert redis["spec"]["strategy"] == {"type": "Recreate"}
    assert redis["spec"]["replicas"] == 1
    assert maybe_find(docs, "StatefulSet", "redis") is None
    box = container(redis, "redis")
    args = box["args"]
    option = {args[i]: args[i + 1] for i in range(1, len(args) - 1, 2)}
    assert option["--requirepass"] == "$(REDIS_PASSWORD)"
    # The kubelet expands $(REDIS_PASSWORD) only from the container's own env.
    env = {variable["name"]: variable for variable in box["env"]}
    for name in ("REDIS_PASSWORD", "REDISCLI_AUTH"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert (unhashed(ref["name"]), ref["key"]) == ("redis-secrets", "REDIS_PASSWORD"), name
    # The stream must never be evicted: only keys with a TTL may be.
    assert option["--maxmemory-policy"].startswith("volatile-")
    maxmemory = int(option["--maxmemory"].removesuffix("mb")) * 2**20
    assert maxmemory < mebibytes(box["resources"]["limits"]["memory"]) * 2**20
    assert "volumeClaimTemplates" not in redis["spec"]


# The spread in production.


def test_production_spreads_over_the_eligible_nodes(rendered: dict[str, list[Manifest]]) -> None:
    for name in APPS:
        constraints = pod_spec(find(rendered["production"], "Deployment", name))[
            "topologySpreadConstraints"
        ]
        (by_node,) = [c for c in constraints if c["topologyKey"] == "kubernetes.io/hostname"]
        assert by_node["maxSkew"] == 1 and by_node["whenUnsatisfiable"] == "DoNotSchedule"
        # Tainted nodes and nodes the pod's affinity excludes aren't counted
        # as empty domains, which would keep every further pod Pending.
        assert by_node["nodeTaintsPolicy"] == by_node["nodeAffinityPolicy"] == "Honor", name
        assert by_node["labelSelector"] == {"matchLabels": {"app.kubernetes.io/name": name}}


# The site's memory.

#: From `make bench`'s token requests (docs/performance.md): gunicorn's
#: master, and each worker after 10,000 tokens.
WEB_MASTER_MIB = 26
WEB_WORKER_MIB = 55


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_memory_request_holds_its_workers(
    rendered: dict[str, list[Manifest]],
    secret_template: dict[str, dict[str, str]],
    overlay: str,
) -> None:
    docs = rendered[overlay]
    box = container(find(docs, "Deployment", "web"), "web")
    # Set, wherever it comes from: gunicorn's default counts the node's cores.
    workers = int(environment(docs, secret_template, box)["WEB_CONCURRENCY"] or 0)
    resources = box["resources"]
    needed = WEB_MASTER_MIB + workers * WEB_WORKER_MIB
    assert mebibytes(resources["requests"]["memory"]) >= needed, (workers, resources)
    # Room for a worker's growth under the admin's larger pages.
    assert mebibytes(resources["limits"]["memory"]) >= 2 * needed, (workers, resources)


# The broadcasters' capacity and their autoscaling.

#: From `make bench` (docs/performance.md): a broadcaster's memory idle with
#: its event history, and budgeted per connection (3-6 KiB measured idle,
#: the rest for writes in flight); the share of the limit to use.
IDLE_MIB = 80
CONNECTION_KIB = 16
SHARE_OF_THE_LIMIT = 0.8
#: The autoscaler adds replicas at this share of BROADCASTER_MAX_CONNECTIONS.
SCALE_AT = 0.7


def mebibytes(quantity: str) -> float:
    units = {"Ki": 2**-10, "Mi": 1, "Gi": 2**10}
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * units[unit]


def max_connections(docs: list[Manifest]) -> int:
    box = container(find(docs, "Deployment", "broadcaster"), "broadcaster")
    (value,) = [v["value"] for v in box["env"] if v["name"] == "BROADCASTER_MAX_CONNECTIONS"]
    return int(value)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_broadcasters_are_full_before_their_memory_is(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    # (80 % of the limit - 80 MiB) / 16 KiB, rounded down to 500: the rule
    # the manifests' comments give.
    docs = rendered[overlay]
    box = container(find(docs, "Deployment", "broadcaster"), "broadcaster")
    limit = mebibytes(box["resources"]["limits"]["memory"])
    room = (SHARE_OF_THE_LIMIT * limit - IDLE_MIB) * 1024 / CONNECTION_KIB
    assert max_connections(docs) == math.floor(room / 500) * 500, limit


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaler_scales_on_connections_and_cpu(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    docs = rendered[overlay]
    hpa = maybe_find(docs, "HorizontalPodAutoscaler", "broadcaster")
    if hpa is None:
        return
    assert "replicas" not in find(docs, "Deployment", "broadcaster")["spec"]
    by_type = {metric["type"]: metric for metric in hpa["spec"]["metrics"]}
    assert set(by_type) == {"Pods", "Resource"}
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    pods = by_type["Pods"]["pods"]
    assert pods["metric"]["name"] == "broadcaster_connections"
    assert pods["target"]["type"] == "AverageValue"
    assert int(pods["target"]["averageValue"]) == round(SCALE_AT * max_connections(docs))
    # The gauge the broadcasters serve on their metrics port.
    source = (PACKAGE / "broadcaster" / "metrics.py").read_text()
    assert 'f"broadcaster_{name}"' in source and '("connections", "gauge"' in source


# Verified TLS to the managed services.


def test_production_verifies_the_managed_services_certificates(
    rendered: dict[str, list[Manifest]],
) -> None:
    docs = rendered["production"]
    for name in APPS:
        workload = find(docs, "Deployment", name)
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        for volume, path in CA_BUNDLES.items():
            config = find(docs, "ConfigMap", volumes[volume]["configMap"]["name"])
            assert "ca.crt" in config["data"], volume
            for box in containers(workload):
                mounts = {m["name"]: m for m in box.get("volumeMounts", [])}
                assert mounts[volume] == {"name": volume, "mountPath": path, "readOnly": True}
    # The addresses the template documents name those files, verified.
    template = (K8S / "base" / "secrets.example.yaml").read_text()
    assert "?sslmode=verify-full&sslrootcert=" + CA_BUNDLES["database-ca"] + "/ca.crt" in template
    assert re.search(
        r"rediss://\S+\?ssl_ca_certs=" + re.escape(CA_BUNDLES["redis-ca"] + "/ca.crt"), template
    )


# Local images.


def test_local_overlay_never_pulls_the_project_image(rendered: dict[str, list[Manifest]]) -> None:
    # It exists only where make k8s-up loaded it: a missing one must fail,
    # not be fetched from Docker Hub under a name the project doesn't own.
    for workload in workloads(rendered["local"]):
        for box in containers(workload):
            project = box["image"] == APP_IMAGE
            assert (box["imagePullPolicy"] == "Never") == project, box["name"]
    # local-cluster.sh swaps in APP_IMAGE where the manifests name this one.
    script = (K8S / "scripts" / "local-cluster.sh").read_text()
    assert f"\nMANIFEST_IMAGE={APP_IMAGE}\n" in script
    assert "APP_IMAGE=${APP_IMAGE:-$MANIFEST_IMAGE}" in script

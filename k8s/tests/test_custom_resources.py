"""The custom resources the components add, HTTPRoute (Gateway API) and
PodMonitor (prometheus-operator), checked for their structure.

kubernetes-validate has schemas for Kubernetes' own kinds only, and passes
these with a warning (make k8s-check refuses any other kind it can't
validate). The schemas below are the subsets of the CRDs' that the
components use (Gateway API v1, prometheus-operator monitoring.coreos.com/v1),
closed to any other field, plus the CRDs' own rules on those fields; what
they don't check is the rest of the CRDs and how a controller reads them.
jsonschema is kubernetes-validate's.
"""

from __future__ import annotations

import re

import jsonschema
import pytest
from manifests import METRICS, OVERLAYS, Manifest, container_ports, containers, selected

#: GEP-2257's Gateway API duration: 1 to 4 groups of a number and a unit.
GATEWAY_DURATION = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"
#: prometheus-operator's Duration.
PROMETHEUS_DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
#: A DNS name, or a wildcard one (``*.example.com``).
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253}
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}


def closed(properties: Manifest, required: tuple[str, ...] = ()) -> Manifest:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


METADATA = closed(
    {"name": NAME, "namespace": NAME, "labels": LABELS, "annotations": LABELS},
    ("name", "namespace"),
)
LABEL_SELECTOR = closed(
    {
        "matchLabels": LABELS,
        "matchExpressions": {
            "type": "array",
            "items": closed(
                {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
                ("key", "operator"),
            ),
        },
    }
)
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}

HTTP_ROUTE = closed(
    {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": METADATA,
        "spec": closed(
            {
                "parentRefs": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 32,
                    "items": closed(
                        {
                            "group": {"type": "string"},
                            "kind": {"type": "string"},
                            "namespace": NAME,
                            "name": NAME,
                            "sectionName": NAME,
                            "port": PORT,
                        },
                        ("name",),
                    ),
                },
                "hostnames": {
                    "type": "array",
                    "maxItems": 16,
                    "items": {
                        "type": "string",
                        "pattern": HOSTNAME,
                    },
                },
                "rules": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 16,
                    "items": closed(
                        {
                            "matches": {
                                "type": "array",
                                "maxItems": 64,
                                "items": closed(
                                    {
                                        "path": closed(
                                            {
                                                "type": {"enum": ["Exact", "PathPrefix"]},
                                                "value": {
                                                    "type": "string",
                                                    "pattern": "^/",
                                                    "maxLength": 1024,
                                                },
                                            },
                                            ("type", "value"),
                                        )
                                    }
                                ),
                            },
                            "backendRefs": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 16,
                                "items": closed(
                                    {
                                        "group": {"const": ""},
                                        "kind": {"const": "Service"},
                                        "name": NAME,
                                        "namespace": NAME,
                                        "port": PORT,
                                        "weight": {"type": "integer", "minimum": 0},
                                    },
                                    # A Service backend needs its port.
                                    ("name", "port"),
                                ),
                            },
                            "timeouts": closed(
                                {
                                    "request": {"type": "string", "pattern": GATEWAY_DURATION},
                                    "backendRequest": {
                                        "type": "string",
                                        "pattern": GATEWAY_DURATION,
                                    },
                                }
                            ),
                        },
                        ("backendRefs",),
                    ),
                },
            },
            ("parentRefs", "rules"),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)

POD_MONITOR = closed(
    {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": METADATA,
        "spec": closed(
            {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": closed(
                    {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": NAME},
                    }
                ),
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": closed(
                        {
                            "port": {"type": "string", "minLength": 1},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": PROMETHEUS_DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": PROMETHEUS_DURATION},
                        },
                        ("port",),
                    ),
                },
            },
            ("selector", "podMetricsEndpoints"),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)

SCHEMAS = {"HTTPRoute": HTTP_ROUTE, "PodMonitor": POD_MONITOR}


def custom_resources(rendered: dict[str, list[Manifest]], kind: str) -> list[Manifest]:
    found = [doc for docs in rendered.values() for doc in docs if doc["kind"] == kind]
    assert found, f"no overlay renders a {kind}"
    return found


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|h|m|s)", duration))


@pytest.mark.parametrize("kind", SCHEMAS)
def test_custom_resources_have_their_crds_structure(
    rendered: dict[str, list[Manifest]], kind: str
) -> None:
    for doc in custom_resources(rendered, kind):
        jsonschema.validate(doc, SCHEMAS[kind])


def test_http_routes_follow_the_crds_rules(rendered: dict[str, list[Manifest]]) -> None:
    for route in custom_resources(rendered, "HTTPRoute"):
        for rule in route["spec"]["rules"]:
            # The CRD's CEL rules: backendRequest within request (0: none).
            timeouts = rule.get("timeouts", {})
            if "request" in timeouts and "backendRequest" in timeouts:
                request = seconds(timeouts["request"])
                assert request == 0 or seconds(timeouts["backendRequest"]) <= request
            for match in rule.get("matches", []):
                value = match["path"]["value"]
                assert "//" not in value and not re.search(r"/\.{1,2}(/|$)", value), value


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_monitors_scrape_metrics_ports(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    docs = rendered[overlay]
    for monitor in (d for d in docs if d["kind"] == "PodMonitor"):
        pods = selected(docs, monitor["spec"]["selector"])
        names = {w["metadata"]["name"] for w in pods}
        assert names == {"web", "broadcaster", "relay"}, names
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] == METRICS
            for workload in pods:
                (box,) = containers(workload, init=False)
                assert endpoint["port"] in container_ports(box), workload["metadata"]["name"]


def test_the_schemas_refuse_what_the_crds_do() -> None:
    # What the tests above rely on: a few mistakes the real CRDs refuse.
    route: Manifest = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "n"},
        "spec": {
            "parentRefs": [{"name": "g"}],
            "rules": [{"backendRefs": [{"name": "s", "port": 80}], "timeouts": {"request": "0s"}}],
        },
    }
    jsonschema.validate(route, HTTP_ROUTE)
    wrong = [
        {"timeouts": {"request": "1 hour"}},
        {"backendRefs": [{"name": "s"}]},
        {"backendRefs": [{"name": "s", "port": "http"}]},
        {"matches": [{"path": {"type": "Prefix", "value": "/ws"}}]},
        {"timeout": {"request": "0s"}},
    ]
    for change in wrong:
        bad = {
            **route,
            "spec": {**route["spec"], "rules": [{**route["spec"]["rules"][0], **change}]},
        }
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, HTTP_ROUTE)
    monitor: Manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "m", "namespace": "n"},
        "spec": {"selector": {}, "podMetricsEndpoints": [{"port": "metrics", "interval": "15s"}]},
    }
    jsonschema.validate(monitor, POD_MONITOR)
    for endpoint in ({"port": "metrics", "interval": "15 s"}, {"port": 9000}):
        bad = {**monitor, "spec": {**monitor["spec"], "podMetricsEndpoints": [endpoint]}}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, POD_MONITOR)

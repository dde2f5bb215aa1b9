#!/usr/bin/env bash
# The local overlay on a cluster of your own (kind, k3d, minikube, Docker
# Desktop...), the one of kubectl's current context. Run through make:
#
#   make k8s-up     build and load the app image, apply k8s/namespace and
#                   k8s/overlays/local (with APP_IMAGE), wait for the
#                   rollout, port-forward until Ctrl-C
#   make k8s-test   the same without the wait, then the end-to-end suite
#                   against the forwarded ports
#
# and the verbs by which the end-to-end suite drives a stack (tests/e2e/stack.py;
# tests/e2e/compose-stack.sh answers them for compose), handy by hand too:
#
#   k8s/scripts/local-cluster.sh token USER | superuser | scale N
#   k8s/scripts/local-cluster.sh broadcasters | metrics POD | restart POD | kill POD
#   k8s/scripts/local-cluster.sh redis restart|kill | relay-metrics | web-metrics
#   k8s/scripts/local-cluster.sh logs | down
#
# Environment (the Makefile sets them): KUBECTL, COMPOSE, APP_IMAGE (the
# image to build, load and run; compose's name by default), SITE_PORT,
# WEBSOCKET_PORT; K8S_NAMESPACE (notifications), K8S_INGRESS_NAMESPACE and
# K8S_INGRESS_SERVICE (ingress-nginx, ingress-nginx-controller).
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBECTL=${KUBECTL:-kubectl}
COMPOSE=${COMPOSE:-docker compose}
# The image the manifests name (compose's), and the one to run instead.
MANIFEST_IMAGE=django-realtime-notifications/app:dev
APP_IMAGE=${APP_IMAGE:-$MANIFEST_IMAGE}
SITE_PORT=${SITE_PORT:-8000}
WEBSOCKET_PORT=${WEBSOCKET_PORT:-8888}
NAMESPACE=${K8S_NAMESPACE:-notifications}
INGRESS_NAMESPACE=${K8S_INGRESS_NAMESPACE:-ingress-nginx}
INGRESS_SERVICE=${K8S_INGRESS_SERVICE:-ingress-nginx-controller}
NAMESPACE_KUSTOMIZATION=k8s/namespace
OVERLAY=k8s/overlays/local
# Every app container's /metrics (WEB_, BROADCASTER_, RELAY_METRICS_PORT).
METRICS_PORT=9000
TIMEOUT=${K8S_TIMEOUT:-600s}

say() { printf '%s\n' "$*" >&2; }
die() { say "$@"; exit 1; }
k() { "$KUBECTL" --namespace "$NAMESPACE" "$@"; }

# The cluster and what it needs.

require_cluster() {
  local context
  if ! context=$("$KUBECTL" config current-context 2>/dev/null); then
    no_cluster "kubectl has no current context (KUBECONFIG=${KUBECONFIG:-unset, so ~/.kube/config})"
  fi
  if ! "$KUBECTL" --request-timeout=5s get --raw=/readyz >/dev/null 2>&1; then
    no_cluster "the cluster of kubectl's context '$context' doesn't answer"
  fi
  say "cluster: kubectl context '$context'"
}

no_cluster() {
  local tools="" tool
  for tool in kind k3d minikube; do
    if command -v "$tool" >/dev/null; then tools+=" $tool"; fi
  done
  die "No Kubernetes cluster available: $1.
Nothing was built or deployed. make k8s-up and make k8s-test use the cluster of
kubectl's current context. Start a local one, with an ingress-nginx controller
(k8s/README.md, \"A local cluster\"), for example:
  kind create cluster
  helm upgrade --install ingress-nginx ingress-nginx --repo https://kubernetes.github.io/ingress-nginx --namespace ingress-nginx --create-namespace
Local cluster tools on this PATH:${tools:- none}."
}

require_ingress_controller() {
  if ! "$KUBECTL" --namespace "$INGRESS_NAMESPACE" get service "$INGRESS_SERVICE" >/dev/null 2>&1; then
    die "No ingress-nginx controller (service $INGRESS_NAMESPACE/$INGRESS_SERVICE): the edge
(k8s/base/edge.yaml) is an Ingress of class nginx. Install it (k8s/README.md):
  helm upgrade --install ingress-nginx ingress-nginx --repo https://kubernetes.github.io/ingress-nginx --namespace ingress-nginx --create-namespace
  (on minikube: minikube addons enable ingress)
or name yours with K8S_INGRESS_NAMESPACE and K8S_INGRESS_SERVICE."
  fi
}

# The image: built as `make up` builds it, then handed to the cluster's nodes.

build_image() {
  scripts/init-env.sh
  scripts/choose-base-images.sh
  cp /etc/ssl/certs/ca-certificates.crt services/web/build-ca.crt 2>/dev/null || : >services/web/build-ca.crt
  $COMPOSE build web
}

load_image() {
  local context
  context=$("$KUBECTL" config current-context)
  case $context in
    kind-*) kind load docker-image "$APP_IMAGE" --name "${context#kind-}" ;;
    k3d-*) k3d image import "$APP_IMAGE" --cluster "${context#k3d-}" ;;
    minikube) minikube image load "$APP_IMAGE" ;;
    docker-desktop | rancher-desktop | orbstack) say "$context runs Docker's images: nothing to load" ;;
    *)
      if command -v minikube >/dev/null && minikube --profile "$context" status >/dev/null 2>&1; then
        minikube --profile "$context" image load "$APP_IMAGE"
      else
        die "Don't know how to give $APP_IMAGE to the nodes of context '$context'.
Push it to a registry they pull from and set it in an overlay of your own
(kustomize edit set image), or use kind, k3d, minikube or Docker Desktop."
      fi
      ;;
  esac
}

# Deploying.

deploy() {
  local restart=()
  for deployment in web relay broadcaster; do
    k get deployment "$deployment" >/dev/null 2>&1 && restart+=("deployment/$deployment")
  done
  # The namespace first: the overlay doesn't hold it (k8s/README.md).
  "$KUBECTL" apply --kustomize "$NAMESPACE_KUSTOMIZATION"
  # What the previous layout had and this one replaced (apply deletes
  # nothing): the Job migrate (now init containers), the StatefulSet redis
  # (now a Deployment, which would run beside it behind the same Service),
  # the per-service policies (now from-edge) and the /metrics Ingress.
  k delete job/migrate statefulset/redis networkpolicy/web networkpolicy/broadcaster \
    networkpolicy/relay ingress/metrics-denied --ignore-not-found
  render | "$KUBECTL" apply --filename -
  # Same tag, new image: replace the pods that run the previous one.
  ((${#restart[@]} == 0)) || k rollout restart "${restart[@]}"
  # web, the relay and the broadcasters migrate in their init containers
  # (one at a time, by a lock) before they start.
  for workload in statefulset/db deployment/redis deployment/web deployment/relay deployment/broadcaster; do
    k rollout status "$workload" --timeout="$TIMEOUT"
  done
}

# The overlay, naming APP_IMAGE wherever it names the project's image.
render() {
  "$KUBECTL" kustomize "$OVERLAY" | awk -v from="image: $MANIFEST_IMAGE" -v to="image: $APP_IMAGE" '
    { line = $0; sub(/^ +/, "", line) }
    line == from { sub(/image: .*/, to) }
    { print }'
}

# Port-forwards: the ingress controller for the site (and /ws/), one
# broadcaster for the direct address (a port-forward reaches one pod). They
# start again by themselves: the suite restarts broadcasters and scales down,
# and kubectl port-forward may outlive its pod (kubernetes/kubernetes#67059).

FORWARDS=()

# Broadcaster pods that serve: running, and not shutting down (a deleted pod
# runs while it drains).
serving_broadcasters() {
  k get pods --selector=app.kubernetes.io/name=broadcaster --field-selector=status.phase=Running \
    -o 'go-template={{range .items}}{{if not .metadata.deletionTimestamp}}{{.metadata.name}}{{"\n"}}{{end}}{{end}}'
}

# To the ingress controller: again whenever kubectl ends.
keep_forwarding_site() {
  while :; do
    "$KUBECTL" --namespace "$INGRESS_NAMESPACE" port-forward "service/$INGRESS_SERVICE" \
      "$SITE_PORT:80" >/dev/null 2>&1 || true
    sleep 1
  done
}

# To one broadcaster: again to another as soon as it stops serving.
keep_forwarding_direct() {
  local pod forwarder
  while :; do
    pod=$(serving_broadcasters 2>/dev/null | head -n 1 || true)
    if [[ -n $pod ]]; then
      # Not through k(): $! must be kubectl itself, to stop it.
      "$KUBECTL" --namespace "$NAMESPACE" port-forward "pod/$pod" "$WEBSOCKET_PORT:8888" >/dev/null 2>&1 &
      forwarder=$!
      while kill -0 "$forwarder" 2>/dev/null && serving_broadcasters 2>/dev/null | grep -x "$pod" >/dev/null; do
        sleep 2
      done
      kill "$forwarder" 2>/dev/null || true
    fi
    sleep 1
  done
}

forward() {
  keep_forwarding_site &
  FORWARDS+=($!)
  keep_forwarding_direct &
  FORWARDS+=($!)
  trap stop_forwarding EXIT
  local deadline=$((SECONDS + 30))
  until curl --silent --fail --output /dev/null "http://127.0.0.1:$SITE_PORT/healthz" \
    && curl --silent --fail --output /dev/null "http://127.0.0.1:$WEBSOCKET_PORT/readyz"; do
    ((SECONDS < deadline)) || die "the forwarded ports don't answer"
    sleep 1
  done
}

stop_forwarding() {
  local loop
  for loop in "${FORWARDS[@]}"; do
    # Frozen, it starts nothing more while its kubectl processes are stopped.
    kill -STOP "$loop" 2>/dev/null || continue
    pkill --parent "$loop" 2>/dev/null || true
    kill -KILL "$loop" 2>/dev/null || true
  done
}

addresses() {
  cat <<EOF

The stack is up (kubectl context: $("$KUBECTL" config current-context), namespace: $NAMESPACE).
  site              http://localhost:$SITE_PORT/   (admin: http://localhost:$SITE_PORT/admin/)
  WebSocket         ws://localhost:$SITE_PORT/ws/   (same origin, through the ingress)
  WebSocket direct  ws://localhost:$WEBSOCKET_PORT/   (one broadcaster, through port-forward)
Next: k8s/scripts/local-cluster.sh superuser (with DJANGO_SUPERUSER_*) or
      kubectl -n $NAMESPACE exec -it deployment/web -- django-admin createsuperuser
Forwarding until Ctrl-C.
EOF
}

# The end-to-end suite, against the forwarded ports. The direct port reaches
# one broadcaster: the suite expects the site's /ws/ alone to balance.

run_suite() {
  make --no-print-directory venv
  forward
  E2E_EXTERNAL_STACK=true E2E_STACK_COMMAND=k8s/scripts/local-cluster.sh E2E_DIRECT_BALANCED=false \
    SITE_PORT=$SITE_PORT WEBSOCKET_PORT=$WEBSOCKET_PORT .venv/bin/pytest tests/e2e
}

# What the suite (or you) does to the running stack.

# The metrics ports are on no Service and no route: read them from inside
# the pod (POD or deployment/NAME, container).
read_metrics() {
  k exec "$1" -c "$2" -- python -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$METRICS_PORT/metrics', timeout=10).read().decode())"
}

case ${1:-} in
  up)
    require_cluster
    require_ingress_controller
    build_image
    load_image
    deploy
    forward
    addresses
    wait
    ;;
  test)
    require_cluster
    require_ingress_controller
    build_image
    load_image
    deploy
    run_suite
    ;;
  token)
    [[ -n ${2:-} ]] || die "usage: $0 token USER"
    k exec deployment/web -c web -- django-admin websocket_token "$2"
    ;;
  superuser)
    k exec deployment/web -c web -- env \
      DJANGO_SUPERUSER_USERNAME="${DJANGO_SUPERUSER_USERNAME:?set it}" \
      DJANGO_SUPERUSER_PASSWORD="${DJANGO_SUPERUSER_PASSWORD:?set it}" \
      DJANGO_SUPERUSER_EMAIL="${DJANGO_SUPERUSER_EMAIL:-}" \
      django-admin createsuperuser --noinput
    ;;
  scale)
    [[ ${2:-} =~ ^[0-9]+$ ]] || die "usage: $0 scale N"
    k scale deployment/broadcaster --replicas="$2"
    k rollout status deployment/broadcaster --timeout="$TIMEOUT"
    # After a scale-down, rollout status may answer before the removed pods
    # are marked for deletion: wait until exactly N serve.
    deadline=$((SECONDS + 60))
    until [[ $(serving_broadcasters | grep -c .) == "$2" ]]; do
      ((SECONDS < deadline)) || die "not $2 serving broadcasters after 60 s: $(serving_broadcasters | xargs)"
      sleep 1
    done
    ;;
  broadcasters)
    serving_broadcasters
    ;;
  metrics)
    [[ -n ${2:-} ]] || die "usage: $0 metrics POD"
    read_metrics "$2" broadcaster
    ;;
  restart)
    [[ -n ${2:-} ]] || die "usage: $0 restart POD"
    # Its Deployment replaces it; the pod drains as in a rollout.
    k delete pod "$2" --wait=true
    k rollout status deployment/broadcaster --timeout="$TIMEOUT"
    ;;
  kill)
    [[ -n ${2:-} ]] || die "usage: $0 kill POD"
    # As near SIGKILL as the API gets: the pod is gone at once, and the
    # kubelet stops its container with the shortest grace it allows (about
    # 2 s, spent in the preStop pause): no drain. The Deployment replaces it.
    k delete pod "$2" --grace-period=0 --force --wait=false
    ;;
  redis)
    case ${2:-} in
      restart) k delete pod --selector=app.kubernetes.io/name=redis --wait=true ;;
      kill) k delete pod --selector=app.kubernetes.io/name=redis --grace-period=0 --force --wait=true ;;
      *) die "usage: $0 redis restart|kill" ;;
    esac
    # Its Deployment starts another, empty (it keeps no data); redis-cli
    # authenticates with the container's REDISCLI_AUTH.
    deadline=$((SECONDS + ${TIMEOUT%s}))
    until k exec deployment/redis -c redis -- redis-cli ping 2>/dev/null | grep -qx PONG; do
      ((SECONDS < deadline)) || die "redis doesn't answer $TIMEOUT after its $2"
      sleep 1
    done
    ;;
  relay-metrics)
    read_metrics deployment/relay relay
    ;;
  web-metrics)
    # One series for all of gunicorn's workers: any web pod.
    read_metrics deployment/web web
    ;;
  logs)
    tail=${TAIL:-200}
    [[ $tail != all ]] || tail=-1
    k logs --selector=app.kubernetes.io/part-of=django-realtime-notifications \
      --all-containers --prefix --timestamps --tail="$tail" --max-log-requests=20
    ;;
  down)
    # The overlay, then the namespace: with it the database's volume claim.
    "$KUBECTL" delete --kustomize "$OVERLAY" --ignore-not-found
    "$KUBECTL" delete --kustomize "$NAMESPACE_KUSTOMIZATION" --ignore-not-found
    ;;
  *)
    die "usage: $0 up | test | token USER | superuser | scale N | broadcasters | metrics POD" \
      "| restart POD | kill POD | redis restart|kill | relay-metrics | web-metrics | logs | down"
    ;;
esac

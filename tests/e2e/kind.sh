#!/usr/bin/env bash
# End-to-end test of the packaged operator on a throw-away kind cluster (see tests/README.md):
# build both images and load them into kind, create the agents' certificates with
# `baton-agent gen-certs`, install the chart with its demo agents, apply a Mesh of two Clusters,
# wait for them to be Ready, raise the Mesh version, kill the leading operator replica (no grace
# period) once a step is recorded and wait for the other to take the Lease, wait again and check
# from the agents' operation records that the upgrade went tier by tier, standby first, each
# operation once; then back out to the old version. Tears everything down
# (custom resources before the operator) unless KEEP_CLUSTER=1.
#
# Needs: docker, kind, kubectl, helm, curl, python3. Environment (all optional):
#   CLUSTER_NAME=baton-e2e       kind cluster to create (or reuse, if it exists)
#   KEEP_CLUSTER=1               leave the cluster and everything in it running
#   SKIP_BUILD=1                 reuse the images OPERATOR_IMAGE and AGENT_IMAGE as they are
#   OPERATOR_IMAGE, AGENT_IMAGE  image references (default baton/operator:e2e, baton/agent:e2e)
#   BATON_AGENT=PATH             a local baton-agent for gen-certs (default: the agent image)
#   WAIT_SECONDS=300             timeout of each wait, in seconds
#   E2E_TARGET_VERSION=2.0.0     version the Mesh is raised to
#   E2E_RUST=1                   afterwards run the Rust tests that use BATON_E2E_KUBECONFIG
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER_NAME=${CLUSTER_NAME:-baton-e2e}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
OPERATOR_IMAGE=${OPERATOR_IMAGE:-baton/operator:e2e}
AGENT_IMAGE=${AGENT_IMAGE:-baton/agent:e2e}
WAIT_SECONDS=${WAIT_SECONDS:-300}
WAIT_TIMEOUT="${WAIT_SECONDS}s"
TARGET_VERSION=${E2E_TARGET_VERSION:-2.0.0}
# The demo agents' version (tests/e2e/manifests/demo-mesh.yaml): the backout returns to it.
FROM_VERSION=1.0.0
E2E_RUST=${E2E_RUST:-0}

# These must match tests/e2e/manifests/ and the chart's demoAgents defaults.
readonly NAMESPACE=baton-system
readonly CR_NAMESPACE=baton-demo
readonly RELEASE=baton
readonly DEMO=demo-agents
readonly DEMO_CLUSTERS=2
readonly DEMO_MEMBERS=(a b)
readonly CONTROL_PORT=7443
readonly MESH=demo
readonly CLIENT_SECRET=baton-agent-client
readonly LEASE=baton-operator  # the chart's leaderElection.leaseName

WORK=$(mktemp -d "${TMPDIR:-/tmp}/baton-e2e.XXXXXX")
KUBECONFIG_FILE="$WORK/kubeconfig"
CREATED_CLUSTER=0
PORT_FORWARD_PID=""

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'kind.sh: %s\n' "$*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is required ($2)"
}

kc() { kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }

split_image() { # "repo:tag" -> "repo tag"
  local ref=$1
  printf '%s %s\n' "${ref%:*}" "${ref##*:}"
}

diagnostics() {
  log "diagnostics"
  kc get pods,statefulsets,deployments,services -n "$NAMESPACE" -o wide || true
  kc get clusters.baton.dev,meshes.baton.dev -n "$CR_NAMESPACE" -o yaml || true
  kc get events -n "$CR_NAMESPACE" --sort-by=.lastTimestamp || true
  kc logs -n "$NAMESPACE" -l app.kubernetes.io/component=operator --tail=200 --prefix || true
  kc logs -n "$NAMESPACE" -l app.kubernetes.io/component=demo-agent --tail=50 --prefix || true
}

stop_port_forward() {
  if [[ -n "$PORT_FORWARD_PID" ]]; then
    kill "$PORT_FORWARD_PID" 2>/dev/null || true
    wait "$PORT_FORWARD_PID" 2>/dev/null || true
    PORT_FORWARD_PID=""
  fi
}

teardown() {
  log "teardown: custom resources first, so the operator can still see them go"
  kc delete meshes.baton.dev --all -n "$CR_NAMESPACE" --wait --timeout=60s || true
  kc delete clusters.baton.dev --all -n "$CR_NAMESPACE" --wait --timeout=60s || true
  kc delete namespace "$CR_NAMESPACE" --wait --timeout=120s || true
  log "teardown: the operator and demo agents"
  helm --kubeconfig "$KUBECONFIG_FILE" uninstall "$RELEASE" -n "$NAMESPACE" --wait --timeout 120s || true
  if [[ "$CREATED_CLUSTER" == 1 ]]; then
    kind delete cluster --name "$CLUSTER_NAME" || true
  fi
}

cleanup() {
  local rc=$?
  stop_port_forward
  if [[ $rc -ne 0 ]]; then
    diagnostics
  fi
  if [[ "$KEEP_CLUSTER" == 1 ]]; then
    log "KEEP_CLUSTER=1: kind cluster $CLUSTER_NAME is left running"
    echo "  kubectl --context kind-$CLUSTER_NAME get clusters.baton.dev,meshes.baton.dev -A" >&2
    echo "  certificates kept in $WORK/pki; delete with: kind delete cluster --name $CLUSTER_NAME" >&2
  else
    teardown
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT

demo_pods() {
  local m i
  for m in "${DEMO_MEMBERS[@]}"; do
    for ((i = 0; i < DEMO_CLUSTERS; i++)); do
      printf '%s\n' "$DEMO-$m-$i"
    done
  done
}

host_of() { printf '%s.%s.%s.svc' "$1" "$DEMO" "$NAMESPACE"; }

join_by_comma() {
  local IFS=,
  printf '%s' "$*"
}

gen_certs() {
  local pods=() hosts=() p
  mapfile -t pods < <(demo_pods)
  for p in "${pods[@]}"; do hosts+=("$(host_of "$p")"); done
  mkdir -p "$WORK/pki"
  if [[ -n "${BATON_AGENT:-}" ]]; then
    "$BATON_AGENT" gen-certs --out "$WORK/pki" --members "$(join_by_comma "${pods[@]}")" \
      --hosts "$(join_by_comma "${hosts[@]}")"
  else
    docker run --rm --user "$(id -u):$(id -g)" -v "$WORK/pki:/out" "$AGENT_IMAGE" \
      gen-certs --out /out --members "$(join_by_comma "${pods[@]}")" \
      --hosts "$(join_by_comma "${hosts[@]}")"
  fi
  # The CA keys stay out of the cluster: agents need certificates, not the power to issue them.
  mkdir -p "$WORK/ca-keys"
  mv "$WORK/pki/ca.key" "$WORK/pki/mesh-ca.key" "$WORK/ca-keys/"
}

create_secrets() {
  kc create namespace "$NAMESPACE" --dry-run=client -o yaml | kc apply -f -
  kc -n "$NAMESPACE" create secret generic "$DEMO-tls" --from-file="$WORK/pki" \
    --dry-run=client -o yaml | kc apply -f -
  kc -n "$NAMESPACE" create secret generic "$CLIENT_SECRET" \
    --from-file=ca.crt="$WORK/pki/ca.crt" --from-file=tls.crt="$WORK/pki/client.crt" \
    --from-file=tls.key="$WORK/pki/client.key" --dry-run=client -o yaml | kc apply -f -
}

# Wait until the operator has seen the object's current generation (the field may not exist
# yet, which `kubectl wait --for=jsonpath` does not wait for on every kubectl version), then
# for Ready=True.
wait_ready() {
  local kind=$1 name=$2 generation observed deadline
  generation=$(kc get "$kind" "$name" -n "$CR_NAMESPACE" -o jsonpath='{.metadata.generation}')
  deadline=$((SECONDS + WAIT_SECONDS))
  while :; do
    observed=$(kc get "$kind" "$name" -n "$CR_NAMESPACE" -o jsonpath='{.status.observedGeneration}')
    [[ "$observed" == "$generation" ]] && break
    ((SECONDS < deadline)) || die "$kind/$name: generation $generation not observed within ${WAIT_SECONDS}s (observed: ${observed:-none})"
    sleep 2
  done
  kc wait "$kind/$name" -n "$CR_NAMESPACE" --timeout="$WAIT_TIMEOUT" --for=condition=Ready
}

wait_all_ready() {
  local i
  for ((i = 0; i < DEMO_CLUSTERS; i++)); do
    wait_ready clusters.baton.dev "demo-$i"
  done
  wait_ready meshes.baton.dev "$MESH"
}

# The kubectl plugin, as shipped in the operator image, run on the kind network with the
# cluster's internal kubeconfig: its tree must show every Cluster Ready on the target version.
check_plugin_tree() {
  local tree="$WORK/plugin-tree.txt" i
  kind get kubeconfig --name "$CLUSTER_NAME" --internal >"$WORK/kubeconfig.internal"
  # The image runs as a non-root user: it must be able to read the mounted file.
  chmod 644 "$WORK/kubeconfig.internal"
  docker run --rm --network kind -v "$WORK/kubeconfig.internal:/kubeconfig:ro" \
    --entrypoint /usr/local/bin/kubectl-baton "$OPERATOR_IMAGE" \
    --kubeconfig /kubeconfig -n "$CR_NAMESPACE" status >"$tree" \
    || die "kubectl baton status failed"
  cat "$tree"
  for ((i = 0; i < DEMO_CLUSTERS; i++)); do
    grep -Eq "cluster/demo-$i  $TARGET_VERSION  Ready  ready" "$tree" \
      || die "kubectl baton status does not show demo-$i Ready on $TARGET_VERSION"
  done
}

# Fetch GET /v1/operations of one agent through a port-forward, over mutual TLS with the
# operator's client certificate; curl verifies the agent by its in-cluster DNS name.
fetch_operations() {
  local pod=$1 out=$2 local_port=17443 tries
  kc port-forward -n "$NAMESPACE" "pod/$pod" "$local_port:$CONTROL_PORT" >"$WORK/port-forward.log" 2>&1 &
  PORT_FORWARD_PID=$!
  for ((tries = 0; tries < 50; tries++)); do
    if curl -sf --max-time 5 --cacert "$WORK/pki/ca.crt" --cert "$WORK/pki/client.crt" \
      --key "$WORK/pki/client.key" --resolve "$(host_of "$pod"):$local_port:127.0.0.1" \
      "https://$(host_of "$pod"):$local_port/v1/operations" -o "$out"; then
      stop_port_forward
      return 0
    fi
    sleep 0.2
  done
  stop_port_forward
  die "could not read /v1/operations of $pod (see $WORK/port-forward.log)"
}

check_upgrade_order() {
  local p
  mkdir -p "$WORK/ops"
  while read -r p; do
    fetch_operations "$p" "$WORK/ops/$p.json"
  done < <(demo_pods)
  python3 "$ROOT/tests/e2e/check_order.py" "$WORK/ops" "$TARGET_VERSION" "$DEMO" "$DEMO_CLUSTERS"
}

# The replica holding the operator's Lease (its POD_NAME is the holder identity).
lease_holder() {
  kc get lease "$LEASE" -n "$NAMESPACE" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true
}

# Once a step of the rollout is recorded, kill the leading replica the hard way (no grace
# period: no shutdown path, no Lease release) and wait for the other replica to take the Lease.
# The order check that follows proves no agent operation was done twice across the takeover.
fail_over_mid_rollout() {
  local deadline leader steps now took
  deadline=$((SECONDS + WAIT_SECONDS))
  while :; do
    steps=$(kc get clusters.baton.dev -n "$CR_NAMESPACE" -o jsonpath='{.items[*].status.steps[*].id}')
    [[ -n "$steps" ]] && break
    ((SECONDS < deadline)) || die "no step of the rollout was recorded within ${WAIT_SECONDS}s"
    sleep 0.5
  done
  leader=$(lease_holder)
  [[ -n "$leader" ]] || die "nobody holds Lease $NAMESPACE/$LEASE"
  log "killing the leading replica $leader in the middle of step(s) $steps"
  kc delete pod "$leader" -n "$NAMESPACE" --grace-period=0 --force --wait=false
  now=$SECONDS
  while :; do
    holder=$(lease_holder)
    [[ -n "$holder" && "$holder" != "$leader" ]] && break
    ((SECONDS < deadline)) || die "no replica took the Lease over from $leader within ${WAIT_SECONDS}s"
    sleep 0.5
  done
  took=$((SECONDS - now))
  log "replica $holder took over after ${took}s"
}

main() {
  need docker "to build the images"
  need kind "https://kind.sigs.k8s.io"
  need kubectl "https://kubernetes.io/docs/tasks/tools/"
  need helm "https://helm.sh/docs/intro/install/"
  need curl "to read the agents' operation records"
  need python3 "to check the order of operations"

  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
    log "reusing kind cluster $CLUSTER_NAME"
  else
    log "creating kind cluster $CLUSTER_NAME"
    kind create cluster --name "$CLUSTER_NAME" --wait 120s
    CREATED_CLUSTER=1
  fi
  kind get kubeconfig --name "$CLUSTER_NAME" >"$KUBECONFIG_FILE"

  if [[ "$SKIP_BUILD" != 1 ]]; then
    log "building $OPERATOR_IMAGE and $AGENT_IMAGE"
    docker build -f "$ROOT/docker/operator.Dockerfile" -t "$OPERATOR_IMAGE" "$ROOT"
    docker build -f "$ROOT/docker/agent.Dockerfile" -t "$AGENT_IMAGE" "$ROOT"
  fi
  log "loading images into kind"
  kind load docker-image --name "$CLUSTER_NAME" "$OPERATOR_IMAGE" "$AGENT_IMAGE"

  log "agent certificates (baton-agent gen-certs) and Secrets"
  gen_certs
  create_secrets

  log "installing the chart with demo agents"
  local op_repo op_tag agent_repo agent_tag
  read -r op_repo op_tag < <(split_image "$OPERATOR_IMAGE")
  read -r agent_repo agent_tag < <(split_image "$AGENT_IMAGE")
  helm --kubeconfig "$KUBECONFIG_FILE" upgrade --install "$RELEASE" "$ROOT/charts/baton" \
    --namespace "$NAMESPACE" \
    --set image.repository="$op_repo" --set image.tag="$op_tag" --set image.pullPolicy=Never \
    --set operator.agentTlsSecret="$CLIENT_SECRET" --set operator.logFormat=text \
    --set demoAgents.enabled=true --set demoAgents.clusters="$DEMO_CLUSTERS" \
    --set demoAgents.image.repository="$agent_repo" --set demoAgents.image.tag="$agent_tag" \
    --set demoAgents.image.pullPolicy=Never \
    --wait --timeout "$WAIT_TIMEOUT"
  local m
  for m in "${DEMO_MEMBERS[@]}"; do
    kc rollout status -n "$NAMESPACE" "statefulset/$DEMO-$m" --timeout="$WAIT_TIMEOUT"
  done
  kc rollout status -n "$NAMESPACE" "deployment/$RELEASE" --timeout="$WAIT_TIMEOUT"

  log "applying tests/e2e/manifests at the agents' version"
  kc apply -f "$ROOT/tests/e2e/manifests/"
  wait_all_ready

  log "raising Mesh $MESH to $TARGET_VERSION"
  kc patch meshes.baton.dev "$MESH" -n "$CR_NAMESPACE" --type merge \
    -p "{\"spec\":{\"version\":\"$TARGET_VERSION\"}}"
  fail_over_mid_rollout
  wait_all_ready
  kc get clusters.baton.dev,meshes.baton.dev -n "$CR_NAMESPACE"

  log "checking the order of the upgrade"
  check_upgrade_order

  log "kubectl baton status (the plugin from the operator image)"
  check_plugin_tree

  log "backing out: Mesh $MESH to $FROM_VERSION, last tier first"
  kc patch meshes.baton.dev "$MESH" -n "$CR_NAMESPACE" --type merge \
    -p "{\"spec\":{\"version\":\"$FROM_VERSION\"}}"
  wait_all_ready
  kc get clusters.baton.dev,meshes.baton.dev -n "$CR_NAMESPACE"

  if [[ "$E2E_RUST" == 1 ]]; then
    # The Rust tests run their own operator processes on this host, on the same Lease and
    # Secret names: the in-cluster replicas must not hold the Lease or reconcile their objects.
    log "Rust end-to-end tests against this cluster (in-cluster operator scaled to 0)"
    kc scale deployment "$RELEASE" -n "$NAMESPACE" --replicas=0
    kc rollout status deployment "$RELEASE" -n "$NAMESPACE" --timeout="$WAIT_TIMEOUT"
    kc delete lease "$LEASE" -n "$NAMESPACE" --ignore-not-found
    (cd "$ROOT" && BATON_E2E_KUBECONFIG="$KUBECONFIG_FILE" BATON_E2E_RELEASE_NAMESPACE="$NAMESPACE" \
      cargo nextest run -p baton --test real_apiserver e2e_kube:: schema_parity:: --locked)
  fi
  log "end-to-end test passed"
}

main "$@"

#!/usr/bin/env bash
# Run a command against a real, throw-away Kubernetes API server (kube-apiserver + etcd) on
# 127.0.0.1, with the Baton operator's ServiceAccount bound to exactly the chart's RBAC.
#
#   bash tests/e2e/apiserver.sh -- cargo nextest run -p baton --test real_apiserver
#
# It only STARTS binaries it finds on this machine; it never downloads or builds them:
#   BATON_KUBE_APISERVER, BATON_ETCD   paths of the two binaries, or
#   BATON_K8S_BIN                      a directory holding kube-apiserver and etcd, or
#   PATH                               kube-apiserver and etcd on the PATH.
# kubectl comes from BATON_KUBECTL or the PATH. Without the binaries it prints one line
# saying the real-API-server suite was skipped and exits 0 (BATON_REQUIRE_APISERVER=1 makes
# that an error).
#
# While COMMAND runs:
#   BATON_E2E_KUBECONFIG            cluster-admin (client certificate in system:masters)
#   BATON_E2E_OPERATOR_KUBECONFIG   ServiceAccount baton-system/baton, token-authenticated,
#                                   bound to the RBAC of the chart, which is installed
#                                   (rendered by Helm's engine) after `kubectl apply -f crds/`
#   BATON_E2E_APISERVER_VERSION     what `kube-apiserver --version` printed
# Everything (processes, certificates, etcd data) lives in a temporary directory removed on
# exit (KEEP=1 keeps it and prints where). Chart values: CHART_VALUES (JSON).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [ "${1:-}" = "--" ]; then shift; fi
if [ "$#" -eq 0 ]; then
  echo "usage: $0 -- COMMAND [ARGS...]" >&2
  exit 2
fi

find_bin() { # name, explicit path
  local name="$1" explicit="$2"
  if [ -n "$explicit" ]; then
    [ -x "$explicit" ] && { echo "$explicit"; return 0; }
    return 1
  fi
  if [ -n "${BATON_K8S_BIN:-}" ] && [ -x "$BATON_K8S_BIN/$name" ]; then
    echo "$BATON_K8S_BIN/$name"
    return 0
  fi
  command -v "$name" 2>/dev/null
}

skip() {
  if [ "${BATON_REQUIRE_APISERVER:-0}" = 1 ]; then
    echo "real API server e2e: $1 (BATON_REQUIRE_APISERVER=1)" >&2
    exit 1
  fi
  echo "real API server e2e: SKIPPED: $1 (set BATON_K8S_BIN or BATON_KUBE_APISERVER/BATON_ETCD; tests/README.md)"
  exit 0
}

apiserver="$(find_bin kube-apiserver "${BATON_KUBE_APISERVER:-}")" || skip "no kube-apiserver binary found"
etcd="$(find_bin etcd "${BATON_ETCD:-}")" || skip "no etcd binary found"
kubectl="${BATON_KUBECTL:-$(command -v kubectl || true)}"
[ -n "$kubectl" ] || skip "no kubectl found"
python="${BATON_PYTHON:-${BATON_VENV:-$HOME/.cache/baton-venv}/bin/python}"
"$python" -c 'import helm_python, yaml' 2>/dev/null \
  || skip "no Python with helm-python-sdk to render the chart's RBAC ($python; pip install -r tests/requirements.txt)"
command -v openssl >/dev/null || skip "no openssl"

work="$(mktemp -d "${TMPDIR:-/tmp}/baton-apiserver.XXXXXX")"
pids=()
# shellcheck disable=SC2329 # invoked by the EXIT trap
cleanup() {
  local rc=$? i p
  # The API server first (it hangs in its graceful shutdown without etcd), then etcd; what
  # has not exited after 10 s is killed.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    p="${pids[$i]}"
    kill "$p" 2>/dev/null || continue
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
    echo "apiserver.sh: logs and certificates kept in $work" >&2
    if [ "$rc" -ne 0 ]; then tail -n 20 "$work/apiserver.log" >&2 2>/dev/null || true; fi
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
etcd_client="$(free_port)"
etcd_peer="$(free_port)"
secure="$(free_port)"

# --- certificates: a CA, the API server's serving certificate, an admin client, SA keys -----
pki="$work/pki"
mkdir -p "$pki"
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=baton-e2e-ca" \
    -keyout ca.key -out ca.crt 2>/dev/null
  cat >serving.ext <<EOF
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth
EOF
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout apiserver.key -out apiserver.csr 2>/dev/null
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile serving.ext -out apiserver.crt 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >client.ext
  openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=baton-e2e-admin" \
    -keyout admin.key -out admin.csr 2>/dev/null
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile client.ext -out admin.crt 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)

# --- etcd and kube-apiserver, loopback only -----------------------------------------------------
"$etcd" --name baton-e2e --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_client" \
  --advertise-client-urls "http://127.0.0.1:$etcd_client" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "baton-e2e=http://127.0.0.1:$etcd_peer" \
  >"$work/etcd.log" 2>&1 &
pids+=("$!")

"$apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_client" \
  --bind-address 127.0.0.1 --secure-port "$secure" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-account-issuer https://kubernetes.default.svc \
  --authorization-mode RBAC --service-cluster-ip-range 10.0.0.0/24 \
  --cert-dir "$work/certs" \
  >"$work/apiserver.log" 2>&1 &
pids+=("$!")
version="$("$apiserver" --version 2>/dev/null || echo unknown)"

admin="$work/admin.kubeconfig"
"$kubectl" config --kubeconfig "$admin" set-cluster e2e --server "https://127.0.0.1:$secure" \
  --certificate-authority "$pki/ca.crt" --embed-certs >/dev/null
"$kubectl" config --kubeconfig "$admin" set-credentials admin \
  --client-certificate "$pki/admin.crt" --client-key "$pki/admin.key" --embed-certs >/dev/null
"$kubectl" config --kubeconfig "$admin" set-context e2e --cluster e2e --user admin >/dev/null
"$kubectl" config --kubeconfig "$admin" use-context e2e >/dev/null
k() { "$kubectl" --kubeconfig "$admin" "$@"; }

for _ in $(seq 1 120); do
  if k get --raw /readyz >/dev/null 2>&1; then break; fi
  if ! kill -0 "${pids[1]}" 2>/dev/null; then
    echo "kube-apiserver exited:" >&2
    tail -n 40 "$work/apiserver.log" >&2
    exit 1
  fi
  sleep 0.5
done
k get --raw /readyz >/dev/null
# /readyz passes a moment before the OpenAPI document that kubectl validates against is served.
for _ in $(seq 1 120); do
  if k get --raw /openapi/v3 >/dev/null 2>&1 && k get --raw /openapi/v2 >/dev/null 2>&1; then break; fi
  sleep 0.5
done

# --- what a user installs: crds/ as it is, then the chart (its ServiceAccount and RBAC are the
# operator's identity below; its Deployment never runs here: there is no scheduler) ------------
k apply -f "$root/crds" >/dev/null
k apply --server-side --force-conflicts -f "$root/crds" >/dev/null
k wait --for condition=Established --timeout 60s crd/clusters.baton.dev crd/meshes.baton.dev >/dev/null
k create namespace baton-system >/dev/null
"$python" "$here/render_chart.py" "${CHART_VALUES:-{\}}" >"$work/chart.yaml"
k apply -f "$work/chart.yaml" >/dev/null
token="$(k -n baton-system create token baton --duration 4h)"
operator="$work/operator.kubeconfig"
"$kubectl" config --kubeconfig "$operator" set-cluster e2e --server "https://127.0.0.1:$secure" \
  --certificate-authority "$pki/ca.crt" --embed-certs >/dev/null
"$kubectl" config --kubeconfig "$operator" set-credentials baton --token "$token" >/dev/null
"$kubectl" config --kubeconfig "$operator" set-context e2e --cluster e2e --user baton \
  --namespace baton-system >/dev/null
"$kubectl" config --kubeconfig "$operator" use-context e2e >/dev/null

echo "real API server e2e: $version on https://127.0.0.1:$secure (etcd $("$etcd" --version 2>/dev/null | head -n1 | awk '{print $3}'))"
export BATON_E2E_KUBECONFIG="$admin"
export BATON_E2E_OPERATOR_KUBECONFIG="$operator"
export BATON_E2E_APISERVER_VERSION="$version"
export BATON_E2E_APISERVER_LOG="$work/apiserver.log"
set +e
(cd "$root" && "$@")
rc=$?
set -e
exit "$rc"

"""tests/e2e/kind.sh driven end to end against stand-ins for docker, kind, kubectl, helm and
curl (no cluster can run here): the order of its steps, what it passes to each tool, that it
checks the rollout with check_order.py, and that it always tears down, CRs before the operator,
success or failure. The stand-ins log their arguments; curl answers with records written by real
agents (tests/e2e/testdata)."""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import subprocess

import pytest
from conftest import ROOT

STUB = r"""#!/usr/bin/env bash
# Stand-in for {name}: logs its arguments, answers what kind.sh asks.
printf '%s %s\n' "{name}" "$*" >>"$STUB_LOG"
case "{name} $*" in
  "kind get clusters"*) exit 0 ;;
  "kind get kubeconfig"*) echo "apiVersion: v1" ;;
  "docker run"*"kubectl-baton"*)
    echo "mesh/demo  → 2.0.0  Ready  2/2 clusters done"
    [[ -n "${{STUB_TREE_OLD:-}}" ]] && v=1.0.0 || v=2.0.0
    for i in 0 1; do echo "    └── cluster/demo-$i  $v  Ready  ready  active a"; done ;;
  "docker run"*)
    for a in "$@"; do case $a in *:/out) out=${{a%:/out}} ;; esac; done
    mkdir -p "$out"
    for f in ca.crt ca.key mesh-ca.crt mesh-ca.key trust.pem server.crt server.key client.crt client.key; do
      echo "$f" >"$out/$f"
    done ;;
  "kubectl"*"create"*"--dry-run=client"*) echo "kind: Secret" ;;
  "kubectl"*"apply -f -"*) cat >/dev/null ;;
  "kubectl"*"{{.metadata.generation}}"*) echo 1 ;;
  "kubectl"*"{{.status.observedGeneration}}"*) echo 1 ;;
  "kubectl"*"{{.items[*].status.steps[*].id}}"*) echo "demo-0.1.force-standby.b" ;;
  "kubectl"*"get lease baton-operator"*)
    # The other replica holds the Lease once the leader's pod was deleted (unless stuck).
    if [[ -z "${{STUB_LEASE_STUCK:-}}" ]] && grep -q "delete pod baton-6f7d-1" "$STUB_LOG"; then
      echo baton-6f7d-2
    else
      echo baton-6f7d-1
    fi ;;
  "kubectl"*"port-forward"*) exec sleep 30 ;;
  "curl"*)
    [[ -n "${{STUB_CURL_FAIL:-}}" ]] && exit 7
    for a in "$@"; do
      case $a in https://*) pod=${{a#https://}}; pod=${{pod%%.*}} ;; esac
      [[ "$prev" == "-o" ]] && file=$a
      prev=$a
    done
    cp "$STUB_OPS/$pod.json" "$file" ;;
esac
exit 0
"""


def harness(tmp_path: pathlib.Path, ops: str, extra_env: dict[str, str] | None = None):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("docker", "kind", "kubectl", "helm", "curl"):
        p = bin_dir / name
        p.write_text(STUB.format(name=name))
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"
    env = dict(os.environ)
    env.update({
        "PATH": f"{bin_dir}:{env['PATH']}",
        "STUB_LOG": str(log),
        "STUB_OPS": str(ROOT / "tests/e2e/testdata" / ops),
        "TMPDIR": str(tmp_path),
        "WAIT_SECONDS": "5",
    })
    env.update(extra_env or {})
    res = subprocess.run(["bash", str(ROOT / "tests/e2e/kind.sh")], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    calls = log.read_text().splitlines() if log.exists() else []
    return res, calls


def index(calls: list[str], needle: str) -> int:
    for i, c in enumerate(calls):
        if needle in c:
            return i
    raise AssertionError(f"no call containing {needle!r} in:\n" + "\n".join(calls))


def test_full_run_in_order_and_torn_down(tmp_path):
    res, calls = harness(tmp_path, "ops-ok")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "upgrade order: tier by tier, standby first" in res.stdout
    order = [
        "kind create cluster --name baton-e2e",
        "docker build -f",
        "kind load docker-image --name baton-e2e baton/operator:e2e baton/agent:e2e",
        "docker run --rm",
        "create secret generic demo-agents-tls",
        "create secret generic baton-agent-client",
        "helm --kubeconfig",
        "apply -f " + str(ROOT / "tests/e2e/manifests/"),
        "wait clusters.baton.dev/demo-0",
        "wait meshes.baton.dev/demo",
        'patch meshes.baton.dev demo -n baton-demo --type merge -p {"spec":{"version":"2.0.0"}}',
        "get lease baton-operator -n baton-system",
        "delete pod baton-6f7d-1 -n baton-system --grace-period=0 --force",
        "https://demo-agents-a-0.demo-agents.baton-system.svc:17443/v1/operations",
        "kind get kubeconfig --name baton-e2e --internal",
        "docker run --rm --network kind",
        'patch meshes.baton.dev demo -n baton-demo --type merge -p {"spec":{"version":"1.0.0"}}',
        "delete meshes.baton.dev --all -n baton-demo",
        "delete clusters.baton.dev --all -n baton-demo",
        "uninstall baton -n baton-system",
        "kind delete cluster --name baton-e2e",
    ]
    positions = [index(calls, n) for n in order]
    assert positions == sorted(positions), "\n".join(calls)
    helm = calls[index(calls, "upgrade --install baton")]
    for s in ("image.repository=baton/operator", "image.tag=e2e", "image.pullPolicy=Never",
              "operator.agentTlsSecret=baton-agent-client", "demoAgents.enabled=true",
              "demoAgents.image.repository=baton/agent", "--wait"):
        assert s in helm, helm
    gen = calls[index(calls, "gen-certs")]
    assert "--members demo-agents-a-0,demo-agents-a-1,demo-agents-b-0,demo-agents-b-1" in gen
    assert "demo-agents-b-1.demo-agents.baton-system.svc" in gen
    # The three waits (first apply, upgrade, backout) cover every Cluster and the Mesh.
    assert sum("wait meshes.baton.dev/demo" in c for c in calls) == 3
    assert sum("wait clusters.baton.dev/demo-1" in c for c in calls) == 3
    # The leader was killed once a step was recorded, and the takeover was seen.
    assert index(calls, "status.steps") < index(calls, "delete pod")
    assert "replica baton-6f7d-2 took over after" in res.stderr
    # Every agent's records were read over mutual TLS, verifying the agent's DNS name. (The
    # port-forward stand-ins run in the background and may be stopped before they log.)
    reads = [c for c in calls if c.startswith("curl ") and "/v1/operations" in c]
    assert len(reads) == 4, reads
    for c in reads:
        assert "--cert" in c and "--key" in c and "--cacert" in c and "--resolve" in c, c
    # The plugin from the operator image reads the demo namespace through the kind network.
    plugin = calls[index(calls, "kubectl-baton")]
    for s in ("--entrypoint /usr/local/bin/kubectl-baton baton/operator:e2e",
              "--kubeconfig /kubeconfig -n baton-demo status", "kubeconfig.internal:/kubeconfig:ro"):
        assert s in plugin, plugin
    assert "cluster/demo-1  2.0.0  Ready" in res.stdout
    # Nothing is left behind.
    assert not list(tmp_path.glob("baton-e2e.*"))


@pytest.mark.parametrize("stub, message", [
    pytest.param("STUB_TREE_OLD", "does not show demo-0 Ready on 2.0.0",
                 id="plugin_tree_not_on_the_target"),
    pytest.param("STUB_LEASE_STUCK", "no replica took the Lease over from baton-6f7d-1",
                 id="no_takeover_after_killing_the_leader"),
    pytest.param("STUB_CURL_FAIL", "could not read /v1/operations of demo-agents-a-0",
                 id="unreachable_agents"),
])
def test_a_failed_check_fails_and_tears_down(tmp_path, stub, message):
    res, calls = harness(tmp_path, "ops-ok", {stub: "1"})
    assert res.returncode != 0
    assert message in res.stderr
    index(calls, "kind delete cluster")


def test_a_bad_rollout_fails_and_still_tears_down(tmp_path):
    res, calls = harness(tmp_path, "ops-active-first")
    assert res.returncode != 0
    assert "upgraded before standby" in res.stderr
    assert "== diagnostics" in res.stderr
    assert index(calls, "delete meshes.baton.dev") < index(calls, "uninstall baton")
    index(calls, "kind delete cluster")


def test_keep_cluster_and_skip_build(tmp_path):
    res, calls = harness(tmp_path, "ops-ok", {"KEEP_CLUSTER": "1", "SKIP_BUILD": "1"})
    assert res.returncode == 0, res.stderr
    assert "KEEP_CLUSTER=1" in res.stderr
    assert not any(c.startswith("docker build") for c in calls)
    # (The leader's pod is deleted on purpose mid-rollout; nothing else is.)
    assert not any(("delete" in c and "delete pod" not in c) or "uninstall" in c
                   for c in calls), calls
    # The certificates stay for the person looking around.
    kept = list(tmp_path.glob("baton-e2e.*/pki/client.crt"))
    assert kept and not list(tmp_path.glob("baton-e2e.*/pki/ca.key"))


@pytest.mark.parametrize("tool", ["docker", "kind", "kubectl", "helm", "curl", "python3"])
def test_missing_tools_are_named(tmp_path, tool):
    # A PATH with only the other tools (as no-op stand-ins) and the few utilities the script
    # uses before it checks its tools.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in {"docker", "kind", "kubectl", "helm", "curl", "python3"} - {tool}:
        p = bin_dir / name
        p.write_text("#!/bin/sh\nexit 0\n")
        p.chmod(0o755)
    for util in ("dirname", "mktemp", "rm"):
        (bin_dir / util).symlink_to(shutil.which(util))
    res = subprocess.run([shutil.which("bash"), str(ROOT / "tests/e2e/kind.sh")],
                         env={**os.environ, "PATH": str(bin_dir), "TMPDIR": str(tmp_path)},
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode != 0
    assert f"{tool} is required" in res.stderr, res.stderr

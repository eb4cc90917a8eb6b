"""The Helm chart renders what docs/install.md and docs/rbac.md promise, and refuses bad values.

Rendering and linting use Helm's own Go engine through helm-python-sdk, so what passes here is
what `helm template` / `helm install` produce.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess

import pytest
import yaml
from conftest import NAMESPACE, RELEASE, ROOT, lint, render, render_error

OPERATOR_FLAGS = {
    "--http-addr",
    "--leader-election",
    "--lease-name",
    "--lease-namespace",
    "--agent-tls-secret",
    "--concurrency",
    "--log-format",
    "--log-level",
    "--watch-namespace",
}

VALUE_SETS = {
    "defaults": {},
    "watch-one-namespace": {"operator": {"watchNamespace": "apps", "agentTlsSecret": "client"}},
    "single-replica": {"replicaCount": 1, "leaderElection": {"enabled": False}},
    "no-crds-no-rbac": {"crds": {"install": False}, "rbac": {"create": False},
                        "serviceAccount": {"create": False, "name": "existing"}},
    "monitoring": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "demo-tls": {"demoAgents": {"enabled": True}, "operator": {"agentTlsSecret": "baton-agent-client"}},
    "demo-insecure-persistent": {"demoAgents": {"enabled": True, "insecureHttp": True, "clusters": 3,
                                                "members": ["a", "b", "c"],
                                                "persistence": {"enabled": True}}},
}


def container(obj):
    return obj["spec"]["template"]["spec"]["containers"][0]


def flags(args):
    out = {}
    for a in args:
        if a.startswith("--"):
            k, _, v = a.partition("=")
            out[k] = v
    return out


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_is_clean(name):
    report = lint(VALUE_SETS[name])
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], problems or report["errors"]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_object_is_namespaced_correctly_and_labelled(name):
    r = render(VALUE_SETS[name])
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    for o in r.objects:
        meta = o["metadata"]
        if o["kind"] in cluster_scoped:
            assert "namespace" not in meta, o["_source"]
        else:
            assert meta.get("namespace") in (NAMESPACE, "apps"), o["_source"]
        assert meta["labels"]["app.kubernetes.io/part-of"] == "baton", o["_source"]


def test_default_render_has_the_operator_and_nothing_optional():
    r = render()
    assert r.kinds() == sorted([
        "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "CustomResourceDefinition",
        "Deployment", "PodDisruptionBudget", "Role", "RoleBinding", "Service", "ServiceAccount",
    ])


def test_deployment_follows_the_operator_contract():
    d = render().one("Deployment")
    spec = d["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    c = container(d)
    assert c["command"] == ["/usr/local/bin/baton"]
    assert c["args"][0] == "operator"
    f = flags(c["args"][1:])
    assert set(f) <= OPERATOR_FLAGS, set(f) - OPERATOR_FLAGS
    assert f["--http-addr"] == "0.0.0.0:8080"
    assert f["--leader-election"] == "true"
    assert f["--lease-name"] == "baton-operator"
    assert f["--lease-namespace"] == "$(POD_NAMESPACE)"
    assert f["--concurrency"] == "8"
    assert f["--log-format"] == "json" and f["--log-level"] == "info"
    assert "--watch-namespace" not in f and "--agent-tls-secret" not in f
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert set(c["resources"]) == {"requests", "limits"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == RELEASE
    # Rolling updates never drop below the current replicas: a standby keeps the lease warm.
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def baton_binary() -> pathlib.Path:
    """The `baton` binary .ci/run built (BATON_BIN), else the usual cargo output paths."""
    candidates = [os.environ.get("BATON_BIN", "")]
    target = os.environ.get("CARGO_TARGET_DIR")
    candidates += [f"{target}/debug/baton"] if target else []
    candidates += [str(ROOT / "target/debug/baton"),
                   str(pathlib.Path.home() / ".cache/baton-target/debug/baton")]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return pathlib.Path(c)
    pytest.skip("no baton binary: run `cargo build -p baton` or set BATON_BIN (.ci/run does)")


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_deployment_args_parse_with_the_real_operator(name):
    """The chart's arguments, as Kubernetes expands them, go through `baton operator`'s own
    parser (`--print-config` resolves them and exits without connecting)."""
    values = VALUE_SETS[name]
    d = render(values).one("Deployment")
    c = container(d)
    env = {"POD_NAMESPACE": NAMESPACE, "POD_NAME": "baton-0"}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in c["args"]]
    res = subprocess.run([str(baton_binary()), *args, "--print-config"], capture_output=True,
                         text=True, timeout=60, check=False,
                         env={k: v for k, v in os.environ.items() if k != "RUST_LOG"})
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    f = flags(args[1:])
    assert got["leaderElection"] == (f.get("--leader-election", "true") == "true")
    assert got["leaseNamespace"] == NAMESPACE
    assert got["concurrency"] == int(f["--concurrency"])
    assert got["logFormat"] == f["--log-format"]
    assert got["watchNamespace"] == (values.get("operator", {}).get("watchNamespace") or None)
    assert got["agentTlsSecret"] == (values.get("operator", {}).get("agentTlsSecret") or None)


def test_a_bad_flag_is_refused_by_the_operator():
    res = subprocess.run([str(baton_binary()), "operator", "--concurrency=0", "--print-config"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode != 0 and "concurrency" in res.stderr, res.stderr


def test_optional_operator_flags_follow_values():
    d = render({"operator": {"watchNamespace": "apps", "agentTlsSecret": "client",
                             "logFormat": "text", "concurrency": 3,
                             "extraArgs": ["--log-level=debug"]}}).one("Deployment")
    args = container(d)["args"]
    f = flags(args)
    assert f["--watch-namespace"] == "apps"
    assert f["--agent-tls-secret"] == "client"
    assert f["--log-format"] == "text" and f["--concurrency"] == "3"
    assert args[-1] == "--log-level=debug"


def test_image_tag_defaults_to_app_version_and_digest_wins():
    chart = yaml.safe_load((ROOT / "charts/baton/Chart.yaml").read_text())
    assert container(render().one("Deployment"))["image"].endswith(":" + chart["appVersion"])
    digest = "sha256:" + "a" * 64
    img = container(render({"image": {"digest": digest}}).one("Deployment"))["image"]
    assert img.endswith("@" + digest)


def test_metrics_service_targets_the_http_port():
    r = render({"metrics": {"serviceMonitor": {"enabled": True}}})
    svc = r.one("Service", f"{RELEASE}-metrics")
    d = r.one("Deployment")
    assert svc["spec"]["selector"] == d["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    sm = r.one("ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    labels = svc["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())


def test_crds_are_the_generated_ones_kept_on_uninstall():
    r = render()
    crds = {o["metadata"]["name"]: o for o in r.all("CustomResourceDefinition")}
    assert set(crds) == {"clusters.baton.dev", "meshes.baton.dev"}
    for name, crd in crds.items():
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        plain_file = ROOT / "crds" / f"baton.dev_{name.split('.')[0]}.yaml"
        plain = yaml.safe_load(plain_file.read_text())
        assert crd["spec"] == plain["spec"], f"{name} differs from {plain_file}"
        # Under templates/, so `helm upgrade` applies schema changes.
        assert "/templates/" in crd["_source"]
    assert not r.all("CustomResourceDefinition") or render({"crds": {"install": False}}).all(
        "CustomResourceDefinition") == []


def rules_of(r):
    """(namespace or None, apiGroup, resource, verb, resourceName or None) of every rule."""
    out = set()
    for kind in ("ClusterRole", "Role"):
        for role in r.all(kind):
            ns = role["metadata"].get("namespace")
            for rule in role["rules"]:
                for g in rule["apiGroups"]:
                    for res in rule["resources"]:
                        for v in rule["verbs"]:
                            for n in rule.get("resourceNames", [None]):
                                out.add((ns, g, res, v, n))
    return out


def test_rbac_has_no_wildcards_and_binds_the_service_account():
    for values in VALUE_SETS.values():
        r = render(values)
        for kind in ("ClusterRole", "Role"):
            for role in r.all(kind):
                for rule in role["rules"]:
                    for field in ("apiGroups", "resources", "verbs"):
                        assert "*" not in rule[field], (role["metadata"]["name"], rule)
        roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
                 for o in r.all("ClusterRole") + r.all("Role")}
        for b in r.all("ClusterRoleBinding") + r.all("RoleBinding"):
            ref = b["roleRef"]
            ns = b["metadata"].get("namespace") if ref["kind"] == "Role" else None
            assert (ref["kind"], ns, ref["name"]) in roles, b
            assert b["subjects"] == [{"kind": "ServiceAccount", "name": b["subjects"][0]["name"],
                                      "namespace": NAMESPACE}]


def rbac_doc_rules():
    """The permission table of docs/rbac.md as (apiGroup, resource, verb, resourceName)."""
    text = (ROOT / "docs" / "rbac.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `") or line.startswith("| core")]
    assert rows, "docs/rbac.md has no permission table"
    out = set()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        group = "" if cells[0].startswith("core") else cells[0].strip("`")
        resources = re.findall(r"`([^`]+)`", cells[1])
        names = re.findall(r"name `([^`]+)`", cells[1])
        resources = [x for x in resources if x not in names]
        verbs = [v.strip() for v in cells[2].split(",")]
        for res in resources:
            for v in verbs:
                out.add((group, res, v, names[0] if names else None))
    return out


def test_docs_rbac_lists_exactly_the_default_permissions():
    rendered = {(g, res, v, n) for (_, g, res, v, n) in rules_of(render())}
    # The doc names the Lease by its default name.
    documented = rbac_doc_rules()
    assert rendered == documented, (
        f"in the chart only: {sorted(rendered - documented, key=str)}; "
        f"in docs/rbac.md only: {sorted(documented - rendered, key=str)}")


def test_watching_one_namespace_keeps_cluster_wide_rights_to_crds():
    r = render({"operator": {"watchNamespace": "apps", "agentTlsSecret": "client"}})
    rules = rules_of(r)
    cluster_wide = {x for x in rules if x[0] is None}
    assert {x[1] for x in cluster_wide} == {"apiextensions.k8s.io"}
    assert {x[2] for x in rules if x[0] == "apps"} == {
        "clusters", "meshes", "clusters/status", "meshes/status", "events"}
    own = {(x[1], x[2]) for x in rules if x[0] == NAMESPACE}
    # Leader election, and the agent client certificate in the release namespace.
    assert own == {("coordination.k8s.io", "leases"), ("", "secrets")}


def test_secrets_are_readable_only_by_the_name_of_the_agent_client_secret():
    # No Secret at all by default.
    assert not any(res == "secrets" for (_, _, res, _, _) in rules_of(render()))
    rules = rules_of(render({"operator": {"agentTlsSecret": "client"}}))
    secrets = {(ns, v, n) for (ns, _, res, v, n) in rules if res == "secrets"}
    assert secrets == {(NAMESPACE, v, "client") for v in ("get", "list", "watch")}


def test_ca_secrets_are_readable_by_name_only_and_where_clusters_are_watched():
    names = ["mesh-ca", "web-ca"]
    verbs = ("get", "list", "watch")
    everywhere = rules_of(render({"certificates": {"caSecretNames": names}}))
    secrets = {(ns, v, n) for (ns, _, res, v, n) in everywhere if res == "secrets"}
    assert secrets == {(None, v, n) for n in names for v in verbs}, secrets
    one = rules_of(render({"certificates": {"caSecretNames": names},
                           "operator": {"watchNamespace": "apps"}}))
    secrets = {(ns, v, n) for (ns, _, res, v, n) in one if res == "secrets"}
    assert secrets == {("apps", v, n) for n in names for v in verbs}, secrets
    # A name that is not a Secret name is refused before anything renders.
    assert "caSecretNames" in render_error({"certificates": {"caSecretNames": ["Not A Name"]}})


def test_clusters_and_meshes_are_never_patched():
    rules = rules_of(render())
    verbs = {v for (_, g, res, v, _) in rules if g == "baton.dev" and res in ("clusters", "meshes")}
    assert verbs == {"get", "list", "watch"}


def test_leases_are_limited_to_the_configured_name():
    rules = rules_of(render({"leaderElection": {"leaseName": "my-lease"}}))
    leases = {(v, n) for (_, g, res, v, n) in rules if res == "leases"}
    assert leases == {("create", None), ("get", "my-lease"), ("update", "my-lease")}
    d = render({"leaderElection": {"leaseName": "my-lease"}}).one("Deployment")
    assert flags(container(d)["args"])["--lease-name"] == "my-lease"


def test_without_leader_election_one_replica_and_no_lease_rights():
    r = render({"replicaCount": 1, "leaderElection": {"enabled": False}})
    assert flags(container(r.one("Deployment"))["args"])["--leader-election"] == "false"
    assert not any(res == "leases" for (_, _, res, _, _) in rules_of(r))
    assert r.all("PodDisruptionBudget") == []
    msg = render_error({"replicaCount": 2, "leaderElection": {"enabled": False}})
    assert "replicaCount: 1" in msg


@pytest.mark.parametrize("values, needle", [
    ({"replicaCount": "two"}, "replicaCount"),
    ({"replicaCount": 0}, "replicaCount"),
    ({"operator": {"logFormat": "xml"}}, "logFormat"),
    ({"operator": {"logLevel": "loud"}}, "logLevel"),
    ({"operator": {"watchNamespace": "Not_A_Namespace"}}, "watchNamespace"),
    ({"operator": {"concurrency": 0}}, "concurrency"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"image": {"digest": "latest"}}, "digest"),
    ({"replicas": 3}, "replicas"),
    ({"crds": {"instal": True}}, "instal"),
    ({"demoAgents": {"members": ["a"]}}, "members"),
    ({"demoAgents": {"members": ["a", "a"]}}, "members"),
    ({"demoAgents": {"version": "latest"}}, "version"),
    ({"demoAgents": {"clusters": 0}}, "clusters"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "interval"),
])
def test_schema_rejects_bad_values(values, needle):
    assert needle in render_error(values)


def test_service_monitor_needs_the_metrics_service():
    msg = render_error({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}})
    assert "metrics.service.enabled" in msg


def test_existing_service_account_must_be_named():
    assert "serviceAccount.name" in render_error({"serviceAccount": {"create": False}})


def demo_pods(values):
    d = values["demoAgents"]
    return [f"demo-agents-{m}-{i}" for m in d.get("members", ["a", "b"])
            for i in range(d.get("clusters", 2))]


def test_demo_agents_with_tls():
    values = VALUE_SETS["demo-tls"]
    r = render(values)
    svc = r.one("Service", "demo-agents")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    sets = {s["metadata"]["name"]: s for s in r.all("StatefulSet")}
    assert set(sets) == {"demo-agents-a", "demo-agents-b"}
    for name, s in sets.items():
        assert s["spec"]["serviceName"] == "demo-agents"
        assert s["spec"]["replicas"] == 2
        labels = s["spec"]["template"]["metadata"]["labels"]
        assert all(labels[k] == v for k, v in svc["spec"]["selector"].items())
        c = container(s)
        assert c["command"] == ["/usr/local/bin/baton-agent"]
        f = flags(c["args"])
        assert f["--member"] == "$(POD_NAME)"
        assert f["--listen"] == "0.0.0.0:7443" and f["--data-listen"] == "0.0.0.0:7444"
        assert f["--data-advertise-host"] == "$(POD_NAME).demo-agents.$(POD_NAMESPACE).svc"
        assert f["--member-cert"] == "/etc/baton-agent/tls/member-$(POD_NAME).crt"
        assert f["--client-ca"] == "/etc/baton-agent/tls/ca.crt"
        assert "--insecure-http" not in f
        env = {e["name"] for e in c["env"]}
        assert {"POD_NAME", "POD_NAMESPACE", "POD_INDEX"} <= env
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        vols = {v["name"]: v for v in s["spec"]["template"]["spec"]["volumes"]}
        assert vols["tls"]["secret"]["secretName"] == "demo-agents-tls"
        assert "emptyDir" in vols["data"]
    a, b = (flags(container(sets[n])["args"]) for n in ("demo-agents-a", "demo-agents-b"))
    assert a["--role"] == "active" and "--source" not in a
    assert b["--role"] == "standby"
    assert b["--source"] == "demo-agents-a-$(POD_INDEX).demo-agents.$(POD_NAMESPACE).svc:7444"
    # NOTES.txt prints the gen-certs command naming every pod and DNS name.
    pods = demo_pods(values)
    assert "--members " + ",".join(pods) in r.notes
    assert "--hosts " + ",".join(f"{p}.demo-agents.{NAMESPACE}.svc" for p in pods) in r.notes
    for p in pods:
        assert f"https://{p}.demo-agents.{NAMESPACE}.svc:7443" in r.notes


def test_demo_agents_insecure_with_persistence():
    values = VALUE_SETS["demo-insecure-persistent"]
    r = render(values)
    sets = {s["metadata"]["name"]: s for s in r.all("StatefulSet")}
    assert set(sets) == {"demo-agents-a", "demo-agents-b", "demo-agents-c"}
    for s in sets.values():
        f = flags(container(s)["args"])
        assert "--insecure-http" in f and "--tls-cert" not in f
        assert s["spec"]["replicas"] == 3
        assert s["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
        assert all(v["name"] != "data" for v in s["spec"]["template"]["spec"].get("volumes", []))
    assert flags(container(sets["demo-agents-c"])["args"])["--source"].startswith("demo-agents-a-")
    assert "gen-certs" not in r.notes
    assert "http://demo-agents-c-2.demo-agents.baton-system.svc:7443" in r.notes


def comment_above(lines, i):
    """The comment block directly above line i (outermost line first), or []."""
    block = []
    j = i - 1
    while j >= 0 and lines[j].strip().startswith("#"):
        block.insert(0, lines[j].strip())
        j -= 1
    return block


def test_values_are_all_documented():
    """Every value in values.yaml has a comment right above it, or belongs to a value whose
    comment starts with `# --` and so describes it as a whole (helm-docs convention). Keys that
    only group others (no value on their line, no comment) need documented children."""
    lines = (ROOT / "charts/baton/values.yaml").read_text().splitlines()
    undocumented = []
    whole = []  # indentation of the enclosing keys documented as a whole
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):(.*)$", line)
        if not m:
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
        whole = [d for d in whole if d < indent]
        if whole:
            continue
        block = comment_above(lines, i)
        if block and block[0].startswith("# --"):
            whole.append(indent)
        elif rest and not block:
            undocumented.append(key)
    assert not undocumented, f"values without a comment: {undocumented}"

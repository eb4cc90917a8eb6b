"""The kind harness and the images' build files: lint-clean, consistent with the chart, and the
rollout-order check tells a good rollout from bad ones (on records written by real agents)."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

E2E = ROOT / "tests" / "e2e"
CHECK = E2E / "check_order.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def tool(name: str) -> str:
    """A linter installed from tests/requirements.txt (next to this Python, or on PATH)."""
    here = pathlib.Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    assert found, f"{name} is missing: pip install -r tests/requirements.txt"
    return found


def shell_scripts() -> list[pathlib.Path]:
    skip = {"target", ".git", ".venv"}
    return sorted(p for p in ROOT.rglob("*.sh") if not skip & set(p.relative_to(ROOT).parts)) + [
        ROOT / ".ci" / "run"]


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_scripts_are_shellcheck_clean(script):
    res = run(tool("shellcheck"), "-x", "--severity=style", str(script))
    assert res.returncode == 0, res.stdout + res.stderr


def test_kind_script_is_strict_and_cleans_up():
    text = (E2E / "kind.sh").read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert "trap cleanup EXIT" in text
    assert "KEEP_CLUSTER" in text
    # Custom resources go before the operator that may hold finalizers on them.
    assert text.index("kc delete meshes.baton.dev") < text.index("helm --kubeconfig \"$KUBECONFIG_FILE\" uninstall")
    assert text.index("kc delete clusters.baton.dev") < text.index("helm --kubeconfig \"$KUBECONFIG_FILE\" uninstall")


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "docker").glob("*.Dockerfile")),
                         ids=lambda p: p.name)
def test_dockerfiles_are_hadolint_clean(dockerfile):
    res = run(tool("hadolint"), "--no-color", str(dockerfile))
    assert res.returncode == 0, res.stdout + res.stderr
    text = dockerfile.read_text()
    assert "FROM rust:1.95-bookworm AS build" in text
    assert "cargo build --locked --release" in text
    assert "FROM gcr.io/distroless/cc-debian12:nonroot" in text
    assert "\nUSER 65532:65532\n" in text


def test_dockerfiles_install_what_the_chart_runs():
    values = yaml.safe_load((ROOT / "charts/baton/values.yaml").read_text())
    op = (ROOT / "docker/operator.Dockerfile").read_text()
    agent = (ROOT / "docker/agent.Dockerfile").read_text()
    assert "/usr/local/bin/baton\n" in op and "/usr/local/bin/kubectl-baton\n" in op
    assert "/usr/local/bin/baton-agent\n" in agent
    assert f"EXPOSE {values['operator']['httpPort']}" in op
    d = values["demoAgents"]
    assert f"EXPOSE {d['controlPort']} {d['dataPort']}" in agent


def kind_constant(name: str) -> str:
    m = re.search(rf"^readonly {name}=(.*)$", (E2E / "kind.sh").read_text(), re.M)
    assert m, f"kind.sh has no readonly {name}"
    return m.group(1)


def test_kind_script_and_manifests_match_the_chart_demo_agents():
    values = yaml.safe_load((ROOT / "charts/baton/values.yaml").read_text())["demoAgents"]
    demo = kind_constant("DEMO")
    namespace = kind_constant("NAMESPACE")
    members = kind_constant("DEMO_MEMBERS").strip("()").split()
    clusters = int(kind_constant("DEMO_CLUSTERS"))
    assert demo == values["name"]
    assert members == values["members"]
    assert '--set demoAgents.clusters="$DEMO_CLUSTERS"' in (E2E / "kind.sh").read_text()
    assert int(kind_constant("CONTROL_PORT")) == values["controlPort"]
    docs = [d for f in sorted((E2E / "manifests").glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text()) if d]
    cluster_docs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Cluster"}
    assert set(cluster_docs) == {f"demo-{i}" for i in range(clusters)}
    for i in range(clusters):
        spec = cluster_docs[f"demo-{i}"]["spec"]
        want = [(f"{demo}-{m}-{i}",
                 f"https://{demo}-{m}-{i}.{demo}.{namespace}.svc:{values['controlPort']}")
                for m in members]
        assert [(m["name"], m["endpoint"]) for m in spec["members"]] == want
        # The member that starts Active (the first letter) is the primary.
        assert spec["members"][0].get("primary") is True
    for d in docs:
        if d["kind"] in ("Cluster", "Mesh"):
            assert d["metadata"]["namespace"] == kind_constant("CR_NAMESPACE")
    mesh = [d for d in docs if d["kind"] == "Mesh"]
    assert [m["metadata"]["name"] for m in mesh] == [kind_constant("MESH")]
    assert mesh[0]["spec"]["version"] == values["version"]


def check(ops_dir: pathlib.Path) -> subprocess.CompletedProcess:
    return run(sys.executable, str(CHECK), str(ops_dir), "2.0.0", "demo-agents", "2")


def test_order_check_accepts_a_tiered_standby_first_rollout():
    res = check(E2E / "testdata/ops-ok")
    assert res.returncode == 0, res.stderr
    assert "tier by tier, standby first" in res.stdout


def test_order_check_rejects_the_active_upgraded_first():
    res = check(E2E / "testdata/ops-active-first")
    assert res.returncode == 1
    assert "demo-agents-a-1 (active) upgraded before standby demo-agents-b-1" in res.stderr


def test_order_check_rejects_overlapping_tiers():
    res = check(E2E / "testdata/ops-tiers-overlap")
    assert res.returncode == 1
    assert "tiers overlap" in res.stderr


def test_order_check_rejects_missing_or_incomplete_records(tmp_path):
    for f in (E2E / "testdata/ops-ok").glob("*.json"):
        if f.stem != "demo-agents-b-1":
            shutil.copy(f, tmp_path / f.name)
    res = check(tmp_path)
    assert res.returncode == 1
    assert "no operation records for demo-agents-b-1" in res.stderr
    # A failed upgrade does not count as the upgrade.
    records = json.loads((E2E / "testdata/ops-ok/demo-agents-b-1.json").read_text())
    for r in records:
        if r["kind"] == "upgrade":
            r["state"] = "Failed"
    (tmp_path / "demo-agents-b-1.json").write_text(json.dumps(records))
    res = check(tmp_path)
    assert res.returncode == 1
    assert "expected one upgrade to 2.0.0" in res.stderr

"""Render charts/baton with Helm's own engine (helm-python-sdk) and print the objects as YAML.

Used by tests/e2e/apiserver.sh to install the chart (CRDs, ServiceAccount, RBAC, Deployment) on
a real API server without a helm binary. Argument: the chart values as JSON (default `{}`).
"""

from __future__ import annotations

import json
import pathlib
import sys

import helm_python as helm
import yaml

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "baton"


def main() -> int:
    values = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values, name="baton", namespace="baton-system", is_install=True)
    docs = []
    for path, text in sorted(files.items()):
        if path.endswith(".txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    # CRDs first, so that nothing that needs them is refused.
    docs.sort(key=lambda d: d.get("kind") != "CustomResourceDefinition")
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

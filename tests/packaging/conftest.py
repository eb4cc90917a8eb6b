"""Shared helpers: render the chart with Helm's own engine (helm-python-sdk) and parse it."""

from __future__ import annotations

import pathlib
from typing import Any

import helm_python as helm  # installed from tests/requirements.txt
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "baton"
RELEASE = "baton"
NAMESPACE = "baton-system"


class Rendered:
    """The objects of one `helm template`, with lookups by kind and name."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.notes = next((v for k, v in files.items() if k.endswith("NOTES.txt")), "")
        self.objects: list[dict[str, Any]] = []
        for path, text in sorted(files.items()):
            if path.endswith(".txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc is not None:
                    doc.setdefault("_source", path)
                    self.objects.append(doc)

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]


def render(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> Rendered:
    with helm.Chart.load(str(CHART)) as chart:
        return Rendered(chart.render(values or {}, name=RELEASE, namespace=namespace, is_install=True))


def render_error(values: dict[str, Any]) -> str:
    """Render, expecting Helm to refuse the values; returns its message."""
    with helm.Chart.load(str(CHART)) as chart:
        try:
            chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except helm.HelmError as e:  # schema failures and `fail` both land here
            return str(e)
    raise AssertionError(f"values were accepted: {values}")


def lint(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return helm.lint(str(CHART), values or {}, strict=True, namespace=NAMESPACE, kube_version="v1.30.0")

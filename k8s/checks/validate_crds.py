"""Validate prometheus-operator resources (PodMonitor, ServiceMonitor, PrometheusRule) offline.

kubernetes-validate ships schemas for built-in kinds only. For the monitoring.coreos.com kinds this
script uses the Pydantic models that `cloudcoil.models.prometheus_operator` generates from the
prometheus-operator CRDs: types and required fields come from the CRD schema, and a round trip
(parse, then dump what the model understood) exposes every field the CRD does not define, which the
API server would prune or reject.

Run with the interpreter of .venv-k8s (where the models are installed):

    .venv-k8s/bin/python k8s/checks/validate_crds.py rendered.yaml [more.yaml ...]

Prints one JSON object per checked resource ({"file", "kind", "name", "errors"}) and exits 1 if any
resource has errors, 2 on unusable input. Resources of other API groups are ignored.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring_v1
from pydantic import ValidationError

GROUP = "monitoring.coreos.com"
MODELS: dict[str, type] = {
    f"{GROUP}/v1/PodMonitor": monitoring_v1.PodMonitor,
    f"{GROUP}/v1/ServiceMonitor": monitoring_v1.ServiceMonitor,
    f"{GROUP}/v1/PrometheusRule": monitoring_v1.PrometheusRule,
}


def unknown_fields(given: Any, understood: Any, path: str = "") -> Iterator[str]:
    """Yield the paths present in `given` that the model dropped from `understood`."""
    if isinstance(given, dict):
        known = understood if isinstance(understood, dict) else {}
        for key, value in given.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in known:
                yield where
            else:
                yield from unknown_fields(value, known[key], where)
    elif isinstance(given, list):
        known_items = understood if isinstance(understood, list) else []
        for index, value in enumerate(given):
            other = known_items[index] if index < len(known_items) else None
            yield from unknown_fields(value, other, f"{path}[{index}]")


def check(document: dict[str, Any]) -> list[str]:
    """Errors for one monitoring.coreos.com resource (empty when it conforms to its CRD)."""
    key = f"{document.get('apiVersion')}/{document.get('kind')}"
    model = MODELS.get(key)
    if model is None:
        return [f"no CRD model for {key}; known: {sorted(MODELS)}"]
    try:
        parsed = model.model_validate(document)
    except ValidationError as exc:
        return [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
    understood = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"{field}: field not defined by the CRD" for field in unknown_fields(document, understood)]


def main(argv: list[str]) -> int:
    """Check every monitoring.coreos.com resource in the given multi-document YAML files."""
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    failed = False
    for name in argv:
        try:
            documents = [d for d in yaml.safe_load_all(Path(name).read_text()) if d]
        except (OSError, yaml.YAMLError) as exc:
            print(f"cannot read {name}: {exc}", file=sys.stderr)
            return 2
        for document in documents:
            if not str(document.get("apiVersion", "")).startswith(f"{GROUP}/"):
                continue
            errors = check(document)
            failed = failed or bool(errors)
            print(json.dumps({"file": name, "kind": document.get("kind"),
                              "name": (document.get("metadata") or {}).get("name"), "errors": errors}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

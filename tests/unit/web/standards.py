"""The vendored GA4GH WES 1.1 OpenAPI file, loaded for tests with its remote `$ref` local.

The WES file takes the service-info `Service` schema from a URL; here the schemas of the
service-info file beside it are added to the WES components and the `$ref` points at them,
so nothing is fetched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

STANDARDS = Path(__file__).resolve().parents[2] / "standards"
WES_FILE = STANDARDS / "ga4gh-wes-1.1.0.openapi.yaml"
SERVICE_INFO_FILE = STANDARDS / "ga4gh-service-info-1.0.0.yaml"
REMOTE_SERVICE = (
    "https://raw.githubusercontent.com/ga4gh-discovery/ga4gh-service-info/v1.0.0/"
    "service-info.yaml#/components/schemas/Service"
)


def _local_refs(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("$ref") == REMOTE_SERVICE:
            return {**node, "$ref": "#/components/schemas/Service"}
        return {key: _local_refs(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_local_refs(value) for value in node]
    return node


def wes_openapi() -> dict[str, Any]:
    wes = yaml.safe_load(WES_FILE.read_text())
    service_info = yaml.safe_load(SERVICE_INFO_FILE.read_text())
    schemas = wes["components"]["schemas"]
    for name, schema in service_info["components"]["schemas"].items():
        assert name not in schemas, f"service-info schema '{name}' clashes with a WES schema"
        schemas[name] = schema
    return _local_refs(wes)

"""Validate YAML/JSON documents against the JSON Schemas in config/schema/.

The same schema files validate configs inside the Snakefile (snakemake.utils.validate) and
here, so a config that one accepts the other accepts. Defaults declared in a schema are
filled in, and the first violation becomes a one-line SpecError that names the document,
the field, the value and what would be accepted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

from federation.errors import SpecError

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "config" / "schema"


@cache
def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.schema.json")):
        resources.append((path.name, Resource.from_contents(json.loads(path.read_text()))))
    return Registry().with_resources(resources)


def _with_defaults(validator_class: Any) -> Any:
    """A validator that fills in `default` values while it validates (jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(
        validator: Any, properties: Mapping[str, Any], instance: Any, schema: Any
    ) -> Iterator[Any]:
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    default = subschema["default"]
                    instance[name] = json.loads(json.dumps(default))  # a fresh copy
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultingValidator = _with_defaults(jsonschema.Draft202012Validator)


def _field_path(error: jsonschema.ValidationError) -> str:
    parts: list[str] = []
    for part in error.absolute_path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    """Turn the most specific schema violation into `field: value problem; fix`."""
    field = _field_path(error)
    value = json.dumps(error.instance, default=str)[:60]
    hint = error.schema.get("description") if isinstance(error.schema, dict) else None
    if error.validator == "required":
        return f"{field}: {error.message}; add it"
    if error.validator == "additionalProperties":
        return f"{field}: {error.message}; remove it or check its spelling"
    if error.validator == "enum":
        return f"'{field}': {value} is not one of {error.validator_value}; use one of those"
    if error.validator == "const":
        return f"'{field}': {value} must be {json.dumps(error.validator_value)}"
    fix = f" ({hint})" if hint else ""
    return f"'{field}': {error.message}{fix}"


def validate(document: Any, schema_name: str, label: str) -> dict[str, Any]:
    """Validate `document` against `config/schema/<schema_name>.schema.json`, filling defaults.

    `label` names the document in messages, e.g. "study config 'study.yaml'".
    """
    if not isinstance(document, dict):
        raise SpecError(
            f"{label}: expected a mapping of settings, got {type(document).__name__}; check the file"
        )
    schema = _registry().contents(f"{schema_name}.schema.json")
    validator = _DefaultingValidator(schema, registry=_registry())
    errors = sorted(
        validator.iter_errors(document), key=lambda e: (len(list(e.absolute_path)), str(e.path))
    )
    if errors:
        raise SpecError(f"{label}: {_describe(errors[0])}")
    return document


def load_document(path: Path, label: str) -> Any:
    """Read YAML (JSON is YAML) with one-line errors for a missing or malformed file."""
    if not path.is_file():
        raise SpecError(f"{label}: file '{path}' not found; check the path")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "malformed YAML"
        raise SpecError(
            f"{label}: '{path}' is not valid YAML{where}: {problem}; fix the syntax"
        ) from None

"""Validate YAML/JSON documents against the JSON Schemas in config/schema/.

The same schema files validate configs inside the Snakefile (snakemake.utils.validate) and
here, so a config that one accepts the other accepts. Defaults declared in a schema are
filled in, and the first violation becomes a one-line SpecError that names the document,
the field, the value and what would be accepted. The value is shown through a bounded
representation (`bounded_repr`), never the whole instance.

Patterns match the whole string, as ECMA-262 (the dialect JSON Schema names) reads them:
Python's ``$`` also matches before a final newline, so `s1\n` would pass ``^[a-z0-9]+$``
and reach paths, ledgers and status output. Here a pattern's final ``$`` means the end.
YAML is read with the strict loader (`yamlio`): no aliases, anchors or duplicate keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

from federation.errors import SpecError
from federation.jsonio import parse_json_strictly
from federation.yamlio import load_yaml

VALUE_TEXT_LIMIT = 60  # a value in an error message: enough to recognise it, never a dump

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "config" / "schema"


@cache
def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.schema.json")):
        resources.append(
            (path.name, Resource.from_contents(parse_json_strictly(path.read_bytes())))
        )
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

    return jsonschema.validators.extend(
        validator_class, {"properties": set_defaults, "pattern": whole_string_pattern}
    )


@cache
def _whole(pattern: str) -> re.Pattern[str]:
    """`pattern` with a final unescaped ``$`` meaning the end of the string (``\\Z``)."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def whole_string_pattern(
    validator: Any, pattern: str, instance: Any, schema: Any
) -> Iterator[jsonschema.ValidationError]:
    if isinstance(instance, str) and not _whole(pattern).search(instance):
        yield jsonschema.ValidationError(f"{bounded_repr(instance)} does not match {pattern!r}")


def bounded_repr(value: Any, limit: int = VALUE_TEXT_LIMIT) -> str:
    """A short JSON-like text of `value` that never walks more than `limit` characters' worth
    of it (a huge or deeply shared structure is cut, not expanded)."""
    pieces: list[str] = []
    budget = [limit + 1]

    def emit(text: str) -> bool:
        pieces.append(text[: budget[0]])
        budget[0] -= len(text)
        return budget[0] > 0

    def walk(item: Any) -> bool:
        if isinstance(item, dict):
            if not emit("{"):
                return False
            for index, (key, inner) in enumerate(item.items()):
                if (index and not emit(", ")) or not emit(json.dumps(str(key)) + ": "):
                    return False
                if not walk(inner):
                    return False
            return emit("}")
        if isinstance(item, list | tuple):
            if not emit("["):
                return False
            for index, inner in enumerate(item):
                if (index and not emit(", ")) or not walk(inner):
                    return False
            return emit("]")
        text = (
            json.dumps(item)
            if isinstance(item, str | int | float | bool) or item is None
            else str(item)
        )
        return emit(text[: budget[0] + 1])

    complete = walk(value)
    text = "".join(pieces)
    return text if complete and len(text) <= limit else text[:limit] + "..."


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
    value = bounded_repr(error.instance)
    hint = error.schema.get("description") if isinstance(error.schema, dict) else None
    if error.validator == "required":
        return f"{field}: {error.message[:200]}; add it"
    if error.validator == "additionalProperties":
        return f"{field}: {error.message[:200]}; remove it or check its spelling"
    if error.validator == "enum":
        return f"'{field}': {value} is not one of {error.validator_value}; use one of those"
    if error.validator == "const":
        return f"'{field}': {value} must be {json.dumps(error.validator_value)}"
    if error.validator == "type":
        return f"'{field}': {value} is not of type {json.dumps(error.validator_value)}"
    fix = f" ({hint})" if hint else ""
    return f"'{field}': {error.message[:200]}{fix}"


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
        return load_yaml(path.read_bytes())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "malformed YAML"
        raise SpecError(
            f"{label}: '{path}' is not valid YAML{where}: {problem}; fix the syntax"
        ) from None

"""YAML in: one strict loader for every YAML document the project reads (study, node and
coordinator configs, S3 credential files, GWAS-SSF sidecars).

It is PyYAML's safe loader with three refusals:

* aliases and anchors (``&a``, ``*a``, ``<<: *a``): a 600-byte document of nested aliases
  expands to billions of nodes (the "billion laughs"), and any message or schema check that
  walks it hangs. Configs never need them; write the value out.
* duplicate keys: two parsers may keep different copies, so what was checked would not be what
  is used (the same rule as the strict JSON parser, `jsonio.parse_json_strictly`).
* documents over `MAX_YAML_BYTES`: configs and sidecars are small.

Refusals are `yaml.YAMLError`s with a line and column, so callers report them like any
other malformed YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

MAX_YAML_BYTES = 1 << 20  # 1 MiB: a study, node or coordinator config is a few KiB


class StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases, anchors or duplicate keys."""

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ConstructorError(
                None,
                None,
                "YAML aliases and anchors (&name, *name, <<) are not accepted; write the values out",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeConstructor reports it below
                break
            if duplicate:
                raise ConstructorError(
                    None,
                    None,
                    f"duplicate key {str(key)[:60]!r}; keep one",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str | bytes) -> Any:
    """Parse one YAML document strictly (see the module docstring); yaml.YAMLError otherwise."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > MAX_YAML_BYTES:
        raise yaml.MarkedYAMLError(
            problem=f"document of {size} bytes is over the {MAX_YAML_BYTES}-byte limit for configs"
        )
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader


def load_yaml_file(path: Path) -> Any:
    return load_yaml(path.read_bytes())

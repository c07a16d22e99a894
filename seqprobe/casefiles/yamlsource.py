"""Safe YAML loading that remembers where every mapping and value came from.

Case-file errors must name a line. PyYAML's safe loader builds plain dicts and forgets the marks,
so this loader builds `SourceMap`s instead: dicts that also know their own line and the line of
each key. It never constructs Python objects from tags (no `!!python/...`).
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["SourceMap", "line_of", "load_yaml"]


class SourceMap(dict[str, Any]):
    """A mapping from a YAML file, with 1-based line numbers for itself and for each key."""

    line: int
    key_lines: dict[str, int]


class SourceList(list[Any]):
    """A sequence from a YAML file, with the 1-based line of each item."""

    line: int
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> SourceMap:
    loader.flatten_mapping(node)
    mapping = SourceMap()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(
                None, None, f"keys must be strings, found {key!r}", key_node.start_mark
            )
        if key in mapping:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> SourceList:
    items = SourceList(loader.construct_object(child, deep=True) for child in node.value)
    items.line = node.start_mark.line + 1
    items.item_lines = [child.start_mark.line + 1 for child in node.value]
    return items


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(text: str) -> Any:
    """Parse one YAML document; raises yaml.YAMLError (with a mark) on bad syntax."""
    return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader derives from SafeLoader


def line_of(node: Any, key: str | None = None, *, default: int = 1) -> int:
    """The line of `node[key]` when known, else of `node`, else `default`."""
    if key is not None and isinstance(node, SourceMap) and key in node.key_lines:
        return node.key_lines[key]
    return getattr(node, "line", default)

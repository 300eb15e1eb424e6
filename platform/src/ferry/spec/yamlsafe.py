"""A YAML reader for untrusted spec files: bounded, alias-free, duplicate-key aware, line-tracking.

PyYAML's SafeLoader still expands aliases (billion-laughs), silently keeps the last of duplicate
keys and reads `on`/`yes`/dates as bools and datetimes (YAML 1.1). Specs need none of that, so this
reader refuses aliases and duplicates and resolves only YAML 1.2's true/false.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ferry.contract.errors import FerryError

MAX_FILE_BYTES = 1_048_576
Path = tuple[str | int, ...]

_BOOL = "tag:yaml.org,2002:bool"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_PLAIN_TAGS = frozenset({"str", "int", "float", "bool", "null", "map", "seq"})


class _SpecLoader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.MarkedYAMLError(
                None, None, "anchors and aliases are not allowed in specs; write the value out", mark
            )
        return super().compose_node(parent, index)


_SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SpecLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


class YamlProblem(FerryError):
    """A spec file that is not the one YAML mapping a spec must be; the loader turns it into a SpecError."""

    def __init__(self, message: str, line: int = 0, hint: str = "") -> None:
        super().__init__(message)
        self.line, self.hint = line, hint

    @property
    def user_message(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.message}" + (f" (hint: {self.hint})" if self.hint else "")


@dataclass
class YamlDocument:
    data: dict[str, Any]
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int:
        """The line of the deepest known prefix of `path`: a missing key points at its parent."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return 1


def read_spec_document(raw: bytes) -> YamlDocument:
    text = _decode(raw)
    try:
        nodes = list(yaml.compose_all(text, Loader=_SpecLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlProblem(f"invalid YAML: {exc.problem or exc.context}", mark.line + 1 if mark else 0) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"invalid YAML: {exc}") from None
    except RecursionError:
        raise YamlProblem("invalid YAML: nested too deeply") from None
    nodes = [node for node in nodes if node is not None]
    if not nodes:
        raise YamlProblem("file holds no YAML document", hint="write one `kind: Model` document")
    if len(nodes) > 1:
        raise YamlProblem("file holds several YAML documents", nodes[1].start_mark.line + 1,
                          "keep one model per file")
    if not isinstance(nodes[0], yaml.MappingNode):
        raise YamlProblem(f"the document must be a mapping, got a {_node_kind(nodes[0])}",
                          nodes[0].start_mark.line + 1, "start the file with `apiVersion: ferry.dev/v1`")
    document = YamlDocument(data={})
    document.data = _build(nodes[0], (), document.lines, _SpecLoader(""))
    return document


def _decode(raw: bytes) -> str:
    if len(raw) > MAX_FILE_BYTES:
        raise YamlProblem(f"file is {len(raw)} bytes; specs are limited to {MAX_FILE_BYTES}")
    if not raw.strip():
        raise YamlProblem("file is empty", hint="write one `kind: Model` document")
    if b"\x00" in raw:
        raise YamlProblem("file is binary (it contains NUL bytes), not YAML")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise YamlProblem(f"file is not UTF-8 text (byte {exc.start})") from None


def _node_kind(node: yaml.Node) -> str:
    return {yaml.SequenceNode: "list", yaml.ScalarNode: "scalar"}.get(type(node), "node")


def _build(node: yaml.Node, path: Path, lines: dict[Path, int], loader: _SpecLoader) -> Any:
    lines[path] = node.start_mark.line + 1
    if node.tag.removeprefix("tag:yaml.org,2002:") not in _PLAIN_TAGS:
        raise YamlProblem(f"invalid YAML: tag {node.tag!r} is not allowed in specs", node.start_mark.line + 1)
    try:
        if isinstance(node, yaml.MappingNode):
            return _build_mapping(node, path, lines, loader)
        if isinstance(node, yaml.SequenceNode):
            return [_build(item, (*path, i), lines, loader) for i, item in enumerate(node.value)]
        return loader.construct_object(node)
    except RecursionError:
        raise YamlProblem("invalid YAML: nested too deeply", node.start_mark.line + 1) from None
    except yaml.constructor.ConstructorError as exc:
        raise YamlProblem(f"invalid YAML: {exc.problem}", node.start_mark.line + 1) from None


def _build_mapping(node: yaml.MappingNode, path: Path, lines: dict[Path, int], loader: _SpecLoader) -> Any:
    mapping: dict[str, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            raise YamlProblem("keys must be plain strings", key_node.start_mark.line + 1)
        raw_key = loader.construct_object(key_node)
        if raw_key is None or raw_key == "":  # `~:`, `null:`, `"":` or a bare `&anchor:` would read as 'None'
            raise YamlProblem("a key is empty or null", key_node.start_mark.line + 1,
                              "write the field's name before the ':'")
        key = str(raw_key)
        if not key.isprintable():  # it would be echoed raw in error paths: terminal escapes in a CI log
            raise YamlProblem(f"key {key!r} contains non-printable characters", key_node.start_mark.line + 1,
                              "keys are plain names such as `epochs`")
        if key in mapping:
            first = lines[(*path, key)]
            raise YamlProblem(f"duplicate key {key!r} (first on line {first})", key_node.start_mark.line + 1,
                              "remove one of them")
        mapping[key] = _build(value_node, (*path, key), lines, loader)
        lines[(*path, key)] = key_node.start_mark.line + 1
    return mapping

"""A resource template's successCondition / failureCondition, evaluated the way Argo Workflows v4 does.

Argo parses each condition with Kubernetes' label-selector parser and matches its requirements against the
object's JSON fields (workflow/executor/resource.go): a failure condition holds when ANY requirement matches,
a success condition only when ALL do. Requirement semantics are the selector's: `!=` and `notin` also match
an absent field, `==`/`in`/`>`/`<` never do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ferry.local.errors import LocalError

_MISSING = object()
_KEY = r"[A-Za-z0-9_.\-/]+"
_OPERATOR = re.compile(rf"^(?P<key>{_KEY})\s*(?P<op>==|=|!=|>|<|\s(?:in|notin)\s*(?=\())\s*(?P<rest>.*)$")
_EXISTS = re.compile(rf"^(?P<neg>!?)\s*(?P<key>{_KEY})$")
_SET = re.compile(r"^\((?P<values>[^()]*)\)$")


@dataclass(frozen=True)
class Requirement:
    key: str  # a dotted JSON path, e.g. status.jobStatus
    op: str  # ==, !=, in, notin, >, <, exists, !exists
    values: tuple[str, ...] = ()

    def matches(self, obj: dict[str, Any]) -> bool:
        found = _lookup(obj, self.key)
        if self.op in ("exists", "!exists"):
            return (found is not _MISSING) == (self.op == "exists")
        if found is _MISSING:
            return self.op in ("!=", "notin")
        text = _as_text(found)
        if self.op in ("==", "in"):
            return text in self.values
        if self.op in ("!=", "notin"):
            return text not in self.values
        try:
            number = int(text)
        except ValueError:
            return False
        limit = int(self.values[0])
        return number > limit if self.op == ">" else number < limit


def parse(condition: str) -> list[Requirement]:
    """The requirements of one condition string; a LocalError names what Argo would refuse."""
    return [_requirement(part.strip(), condition) for part in _split(condition)]


def failure_holds(condition: str | None, obj: dict[str, Any]) -> bool:
    """Argo ORs a failure condition's requirements: any one that matches fails the step."""
    return bool(condition) and any(req.matches(obj) for req in parse(condition or ""))


def success_holds(condition: str | None, obj: dict[str, Any]) -> bool:
    """Argo ANDs a success condition's requirements: the step succeeds only when all match."""
    requirements = parse(condition or "") if condition else []
    return bool(requirements) and all(req.matches(obj) for req in requirements)


def _split(condition: str) -> list[str]:
    """Commas separate requirements, except inside an `in (...)` set."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(condition):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(condition[start:i])
            start = i + 1
    parts.append(condition[start:])
    return parts


def _requirement(text: str, condition: str) -> Requirement:
    if (exists := _EXISTS.match(text)) is not None:
        return Requirement(exists["key"], "!exists" if exists["neg"] else "exists")
    match = _OPERATOR.match(text)
    if match is None:
        raise LocalError(f"resource condition {condition!r}: cannot parse {text!r}; write label-selector "
                         "requirements (key == v, key != v, key in (a, b), key notin (a, b), key > n, key), "
                         "separated by commas")
    op, rest = match["op"].strip(), match["rest"].strip()
    if op in ("in", "notin"):
        values = _SET.match(rest)
        if values is None:
            raise LocalError(f"resource condition {condition!r}: {text!r} needs a set like (a, b)")
        return Requirement(match["key"], op, tuple(v.strip() for v in values["values"].split(",") if v.strip()))
    if op in (">", "<") and not re.fullmatch(r"-?\d+", rest):
        raise LocalError(f"resource condition {condition!r}: {text!r} compares with a non-integer")
    if not rest or " " in rest:
        raise LocalError(f"resource condition {condition!r}: {text!r} needs exactly one value")
    return Requirement(match["key"], "==" if op == "=" else op, (rest,))


def _lookup(obj: Any, path: str) -> Any:
    current = obj
    for key in path.split("."):
        if not isinstance(current, dict) or key not in current:
            return _MISSING
        current = current[key]
    return current


def _as_text(value: Any) -> str:
    """gjson's String(): JSON booleans are `true`/`false`, null is empty."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)

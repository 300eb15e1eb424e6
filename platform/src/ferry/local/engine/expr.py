"""Argo's `{{...}}` substitution and the small expression language of `when` and retry `expression`.

Never `eval`: a `when` is text produced by substituting step outputs, i.e. whatever a step wrote into a
file. The grammar covers what ferry's templates and Argo's docs use:

    expr := or;  or := and ('||' and)*;  and := unary ('&&' unary)*;  unary := '!' unary | cmp
    cmp  := value (('=='|'!='|'<'|'<='|'>'|'>=') value)?
    value:= '(' expr ')' | asInt '(' expr ')' | asFloat '(' expr ')' | "str" | 'str' | word | (nothing)

A word is looked up in the variables (`lastRetry.exitCode`) and otherwise taken literally (`true`, a
substituted output). Two numbers compare as numbers, anything else as text. A missing operand (an
output a step did not write substitutes to '') is the empty string, so `' == true'` is false rather
than an error: a step that did not say "passed" did not pass.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ferry.local.errors import LocalError

_VARIABLE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_TOKEN = re.compile(r"""\s*(?:(\|\||&&|==|!=|<=|>=|<|>|!|\(|\))|"([^"]*)"|'([^']*)'|([^\s()!=<>&|"']+))""")
_COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
_FUNCTIONS = {"asInt", "asFloat"}

Value = str | bool


def substitute(text: str, scope: Mapping[str, str], where: str) -> str:
    """Replace every `{{name}}` with scope[name]; an unknown name is an error naming `where`."""

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key.startswith("="):
            raise LocalError(f"{where}: expression templates ({{{{={key[1:]}}}}}) are not supported locally")
        if key not in scope:
            hint = " (was that task Skipped, or does it not declare this output?)" if key.startswith("tasks.") else ""
            raise LocalError(f"{where}: unknown variable {{{{{key}}}}}{hint}")
        return scope[key]

    return _VARIABLE.sub(replace, text)


def _tokens(text: str) -> list[tuple[str, str]]:
    """('op', '==') or ('str', 'value') tokens; quoted and bare words are both values."""
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise LocalError(f"cannot parse expression {text!r} near {text[pos:]!r}")
        op, dq, sq, word = match.groups()
        if op:
            tokens.append(("op", op))
        elif word is not None:
            tokens.append(("word", word))
        else:
            tokens.append(("str", dq if dq is not None else sq))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, variables: Mapping[str, str]) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0
        self.variables = variables

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take_op(self, *ops: str) -> str | None:
        token = self.peek()
        if token and token[0] == "op" and token[1] in ops:
            self.pos += 1
            return token[1]
        return None

    def parse(self) -> Value:
        value = self.or_()
        if self.peek() is not None:
            raise LocalError(f"cannot parse expression {self.text!r}: unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return value

    def or_(self) -> Value:
        value = self.and_()
        while self.take_op("||"):
            right = self.and_()
            value = truthy(value) or truthy(right)
        return value

    def and_(self) -> Value:
        value = self.unary()
        while self.take_op("&&"):
            right = self.unary()
            value = truthy(value) and truthy(right)
        return value

    def unary(self) -> Value:
        if self.take_op("!"):
            return not truthy(self.unary())
        left = self.value()
        op = self.take_op(*_COMPARISONS)
        return compare(left, op, self.value()) if op else left

    def value(self) -> Value:
        token = self.peek()
        if token is None or (token[0] == "op" and token[1] != "(" and token[1] != "!"):
            return ""  # missing operand: an empty substitution
        if self.take_op("("):
            inner = self.or_()
            self._close()
            return inner
        if token[0] == "op":  # '!' inside a comparison operand
            return self.unary()
        self.pos += 1
        kind, text = token
        if kind == "word" and text in _FUNCTIONS and self.take_op("("):
            arg = self.or_()
            self._close()
            return _convert(text, arg)
        return self.variables.get(text, text) if kind == "word" else text

    def _close(self) -> None:
        if not self.take_op(")"):
            raise LocalError(f"cannot parse expression {self.text!r}: missing ')'")


def _as_text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _number(value: Value) -> float | None:
    try:
        return float(_as_text(value))
    except ValueError:
        return None


def _convert(function: str, value: Value) -> str:
    number = _number(value)
    if number is None:
        raise LocalError(f"{function}({_as_text(value)!r}): not a number")
    return str(int(number)) if function == "asInt" else repr(number)


def compare(left: Value, op: str, right: Value) -> bool:
    """Numbers as numbers, everything else as text (only == and != for text)."""
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    if op not in ("==", "!="):
        raise LocalError(f"cannot compare {_as_text(left)!r} {op} {_as_text(right)!r}: not numbers")
    equal = _as_text(left) == _as_text(right)
    return equal if op == "==" else not equal


def truthy(value: Value) -> bool:
    return value if isinstance(value, bool) else value.strip().lower() == "true"


def evaluate(text: str, variables: Mapping[str, str] | None = None) -> bool:
    """Evaluate a `when` (already substituted) or a retry expression with its `lastRetry.*` variables."""
    if not text.strip():
        return False
    return truthy(_Parser(text, variables or {}).parse())

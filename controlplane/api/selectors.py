"""Label and field selectors, as Kubernetes' ``labels`` and ``fields`` packages define them.

Flow: a label ``Requirement`` (key, operator, values) and ``LabelSelector`` (every requirement
must hold), built from the ``labelSelector`` query string by ``parse_label_selector`` (a small
lexer and recursive-descent parser over Kubernetes' grammar) or from an object's ``selector``
by ``LabelSelector.from_object``; their string forms (``selector_to_string``,
``format_label_selector``, ``format_labels``); then field selectors, which only compare strings
with =, == and != (``parse_field_selector``). Errors are ValueErrors with a message for the
client; nothing here knows about HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .validation import is_label_value, is_qualified_name

# Operators, spelled as Kubernetes' selection.Operator values.
EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "=", "==", "!="
IN, NOT_IN, EXISTS, DOES_NOT_EXIST = "in", "notin", "exists", "!"
GREATER_THAN, LESS_THAN = "gt", "lt"
_SET_OPS = (IN, NOT_IN)
_EXACT_OPS = (EQUALS, DOUBLE_EQUALS, NOT_EQUALS)
_PRESENCE_OPS = (EXISTS, DOES_NOT_EXIST)
_SPELLING = {EQUALS: "=", DOUBLE_EQUALS: "==", NOT_EQUALS: "!=", IN: " in ", NOT_IN: " notin ",
             GREATER_THAN: ">", LESS_THAN: "<"}
_EXPRESSION_OPS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}
_INTEGER = "[-+]?[0-9]+"


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector; built only through ``requirement`` so it is valid."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator in (EQUALS, DOUBLE_EQUALS, IN):
            return present and value in self.values
        if self.operator in (NOT_EQUALS, NOT_IN):
            return not present or value not in self.values
        if self.operator == EXISTS:
            return present
        if self.operator == DOES_NOT_EXIST:
            return not present
        if value is None or not re.fullmatch(_INTEGER, value):
            return False
        number, bound = int(value), int(self.values[0])
        return number > bound if self.operator == GREATER_THAN else number < bound

    def __str__(self) -> str:
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return "!" + self.key
        values = ",".join(sorted(self.values))
        if self.operator in _SET_OPS:
            values = f"({values})"
        return f"{self.key}{_SPELLING[self.operator]}{values}"


def requirement(key: str, operator: str, values: Iterable[str] = ()) -> Requirement:
    """Kubernetes' ``NewRequirement``: checks the key, the values and their count."""
    values = tuple(values)
    errors = [f'invalid label key "{key}": {m}' for m in is_qualified_name(key)]
    if operator in _SET_OPS and not values:
        errors.append("for 'in', 'notin' operators, values set can't be empty")
    elif operator in _EXACT_OPS and len(values) != 1:
        errors.append("exact-match compatibility requires one single value")
    elif operator in _PRESENCE_OPS and values:
        errors.append("values set must be empty for exists and does not exist")
    elif operator in (GREATER_THAN, LESS_THAN) and (
            len(values) != 1 or not re.fullmatch(_INTEGER, values[0])):
        errors.append("for 'Gt', 'Lt' operators, the value must be an integer")
    for value in values:
        errors += [f'invalid label value: "{value}": at key: "{key}": {m}'
                   for m in is_label_value(value)]
    if errors:
        raise ValueError("; ".join(errors))
    return Requirement(key, operator, values)


class LabelSelector:
    """All requirements must hold. An empty selector matches everything; the selector of an
    absent ``selector`` field (``from_object(None)``) matches nothing, as in Kubernetes."""

    def __init__(self, requirements: Iterable[Requirement] = (), *, nothing: bool = False):
        self.requirements = tuple(sorted(requirements, key=lambda r: r.key))
        self.nothing = nothing

    @classmethod
    def from_object(cls, selector: dict[str, Any] | None) -> LabelSelector:
        """Kubernetes' ``LabelSelectorAsSelector``: matchLabels and matchExpressions."""
        if selector is None:
            return cls(nothing=True)
        reqs = [requirement(k, EQUALS, [v])
                for k, v in (selector.get("matchLabels") or {}).items()]
        for expr in selector.get("matchExpressions") or []:
            op = _EXPRESSION_OPS.get(expr.get("operator"))
            if op is None:
                raise ValueError(f'"{expr.get("operator")}" is not a valid label selector '
                                 "operator")
            reqs.append(requirement(expr.get("key") or "", op, expr.get("values") or ()))
        return cls(reqs)

    @property
    def empty(self) -> bool:
        """True when the selector matches every object."""
        return not self.nothing and not self.requirements

    def matches(self, labels: dict[str, str] | None) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return f"LabelSelector({str(self)!r})"


# ------------------------------------------------------------------ label selector strings

_SYMBOLS = ("!=", "==", "=", "!", "(", ")", ",", ">", "<")
_IDENTIFIER = re.compile(r"[^\s!=(),<>]+")
_END = ""


def _lex(text: str) -> Iterator[str]:
    """Tokens: the symbols above and identifiers (anything else up to a space or a symbol)."""
    pos = 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        symbol = next((s for s in _SYMBOLS if text.startswith(s, pos)), None)
        if symbol:
            yield symbol
            pos += len(symbol)
            continue
        match = _IDENTIFIER.match(text, pos)
        assert match is not None  # every non-space, non-symbol character starts one
        yield match.group()
        pos = match.end()


class _Parser:
    """Kubernetes' label selector grammar::

        selector    ::= requirement ("," requirement)*
        requirement ::= ["!"] KEY [ ("in" | "notin") "(" VALUES ")" | ("=" | "==" | "!=" |
                        ">" | "<") VALUE ]
    """

    def __init__(self, text: str):
        self.tokens = list(_lex(text))
        self.pos = 0

    def peek(self) -> str:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else _END

    def take(self) -> str:
        token = self.peek()
        self.pos += 1
        return token

    @staticmethod
    def is_identifier(token: str, *, value: bool = False) -> bool:
        """Outside values, "in" and "notin" are keywords, not identifiers."""
        return token not in _SYMBOLS and token != _END and (value or token not in _SET_OPS)

    @staticmethod
    def found(token: str, expected: str) -> ValueError:
        return ValueError(f"found '{token or 'end of string'}', expected: {expected}")

    def parse(self) -> LabelSelector:
        reqs: list[Requirement] = []
        while self.peek() != _END:
            token = self.peek()
            if not (token == "!" or self.is_identifier(token)):
                raise self.found(token, "!, identifier, or 'end of string'")
            reqs.append(self.requirement())
            token = self.take()
            if token == ",":
                following = self.peek()
                if not (following == "!" or self.is_identifier(following)):
                    raise self.found(following, "identifier after ','")
            elif token != _END:
                raise self.found(token, "',' or 'end of string'")
        return LabelSelector(reqs)

    def requirement(self) -> Requirement:
        negated = self.peek() == "!"
        if negated:
            self.take()
        key = self.take()
        if not self.is_identifier(key):
            raise self.found(key, "identifier")
        if negated:
            return requirement(key, DOES_NOT_EXIST)
        if self.peek() in (_END, ","):
            return requirement(key, EXISTS)
        op = self.take()
        if op in _SET_OPS:
            return requirement(key, op, self.value_set())
        spelled = {"=": EQUALS, "==": DOUBLE_EQUALS, "!=": NOT_EQUALS, ">": GREATER_THAN,
                   "<": LESS_THAN}
        if op not in spelled:
            raise self.found(op, "in, notin, =, ==, !=, gt, lt")
        return requirement(key, spelled[op], [self.exact_value()])

    def exact_value(self) -> str:
        if self.peek() in (_END, ","):
            return ""
        token = self.take()
        if not self.is_identifier(token, value=True):
            raise self.found(token, "identifier")
        return token

    def value_set(self) -> set[str]:
        """``( v1, v2 )``; empty entries, as in ``(a,)`` or ``()``, stand for the value ""."""
        token = self.take()
        if token != "(":
            raise self.found(token, "'('")
        values: set[str] = set()
        expect_value = True
        while True:
            token = self.take()
            if token == ")":
                if expect_value:
                    values.add("")
                return values
            if token == ",":
                if expect_value:
                    values.add("")
                expect_value = True
            elif self.is_identifier(token, value=True) and expect_value:
                values.add(token)
                expect_value = False
            else:
                raise self.found(token, "',', ')' or identifier")


def parse_label_selector(text: str) -> LabelSelector:
    """The ``labelSelector`` query parameter ("app=web,tier!=db,env in (a,b),!canary")."""
    return _Parser(text).parse()


def selector_to_string(selector: dict[str, Any] | None) -> str:
    """An object's selector as a query string: the Scale subresource's ``status.selector``.

    Empty for a selector that matches everything; "<error>" (as ``FormatLabelSelector``
    writes it) for one that cannot be converted, which validation keeps out of the store.
    """
    try:
        return str(LabelSelector.from_object(selector))
    except ValueError:
        return "<error>"


def format_label_selector(selector: dict[str, Any] | None) -> str:
    """Kubernetes' ``metav1.FormatLabelSelector``, for table cells: "<none>" when empty."""
    return selector_to_string(selector) or "<none>"


def format_labels(labels: dict[str, str] | None) -> str:
    """Kubernetes' ``labels.FormatLabels``: sorted ``k=v`` pairs, "<none>" when empty."""
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "<none>"


# ------------------------------------------------------------------ field selectors

_FIELD_OPS = ("!=", "==", "=")


@dataclass(frozen=True)
class FieldSelector:
    """Field requirements ``(field, op, value)``, op "=" or "!=", all of which must hold.

    A field the object does not have compares as "" (Kubernetes' ``fields.Set``)."""

    requirements: tuple[tuple[str, str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: dict[str, str]) -> bool:
        return all((fields.get(f, "") == v) == (op == "=") for f, op, v in self.requirements)

    def check_supported(self, supported: Collection[str]) -> None:
        """ValueError naming the first field the kind cannot select on."""
        for fld, _op, _value in self.requirements:
            if fld not in supported:
                raise ValueError(f"field label not supported: {fld}")

    def __str__(self) -> str:
        return ",".join(f"{f}{op}{_escape(v)}" for f, op, v in self.requirements)


def parse_field_selector(text: str) -> FieldSelector:
    """The ``fieldSelector`` query parameter ("spec.nodeName=n1,status.phase!=Failed"); values
    may escape ``\\``, ``,`` and ``=`` with a backslash."""
    reqs = []
    for term in sorted(_split_terms(text)):
        if not term:
            continue
        for i in range(len(term)):
            op = next((o for o in _FIELD_OPS if term.startswith(o, i)), None)
            if op:
                field, value = term[:i], _unescape(term[i + len(op):])
                reqs.append((field, "!=" if op == "!=" else "=", value))
                break
        else:
            raise ValueError(f"invalid selector: '{text}'; can't understand '{term}'")
    return FieldSelector(tuple(reqs))


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not escaped."""
    if not text:
        return []
    terms, start, escaped = [], 0, False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _unescape(value: str) -> str:
    out, chars = [], iter(value)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            if nxt not in ("\\", ",", "="):
                raise ValueError(f"invalid escape sequence: \\{nxt}")
            out.append(nxt)
        elif char in ",=":
            raise ValueError(f"unescaped character: {char}")
        else:
            out.append(char)
    return "".join(out)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")

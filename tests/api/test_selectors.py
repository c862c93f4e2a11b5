"""controlplane.api.selectors: label selector strings and objects, field selectors.

Tables: selector text -> its canonical string and which label sets it matches; texts that
must fail; object selectors; field selector texts -> requirements and matches.
"""

from __future__ import annotations

import pytest

from controlplane.api.selectors import (
    FieldSelector,
    LabelSelector,
    format_label_selector,
    format_labels,
    parse_field_selector,
    parse_label_selector,
    selector_to_string,
)

WEB = {"app": "web", "tier": "front"}
DB = {"app": "db", "tier": "back", "canary": "true"}
BARE: dict[str, str] = {}
NUMBERED = {"replicas": "5"}

# text, canonical string, matches (WEB, DB, BARE, NUMBERED)
LABEL_CASES = [
    ("", "", (True, True, True, True)),
    ("app=web", "app=web", (True, False, False, False)),
    ("app==web", "app==web", (True, False, False, False)),
    ("app!=web", "app!=web", (False, True, True, True)),
    ("app", "app", (True, True, False, False)),
    ("!canary", "!canary", (True, False, True, True)),
    ("app in (web, db)", "app in (db,web)", (True, True, False, False)),
    ("app notin (web)", "app notin (web)", (False, True, True, True)),
    ("tier=front,app=web", "app=web,tier=front", (True, False, False, False)),
    ("  app = web , !canary ", "app=web,!canary", (True, False, False, False)),
    ("app=", "app=", (False, False, False, False)),
    ("app in (web,)", "app in (,web)", (True, False, False, False)),
    ("replicas>3", "replicas>3", (False, False, False, True)),
    ("replicas<3", "replicas<3", (False, False, False, False)),
    ("example.com/role=in", "example.com/role=in", (False, False, False, False)),
]


@pytest.mark.parametrize("text, canonical, expected", LABEL_CASES)
def test_parse_label_selector(text: str, canonical: str, expected: tuple[bool, ...]) -> None:
    selector = parse_label_selector(text)
    assert str(selector) == canonical
    assert tuple(selector.matches(labels) for labels in (WEB, DB, BARE, NUMBERED)) == expected
    assert str(parse_label_selector(canonical)) == canonical


@pytest.mark.parametrize("text, message", [
    ("=web", "found '=', expected: !, identifier, or 'end of string'"),
    ("app=web,", "found 'end of string', expected: identifier after ','"),
    ("app web", "found 'web', expected: in, notin, =, ==, !=, gt, lt"),
    ("app in web", "found 'web', expected: '('"),
    ("app in (a b)", "found 'b', expected: ',', ')' or identifier"),
    ("app in (a", "found 'end of string', expected: ',', ')' or identifier"),
    ("app=(", "found '(', expected: identifier"),
    ("!", "found 'end of string', expected: identifier"),
    ("in=x", "found 'in', expected: !, identifier, or 'end of string'"),
    ("app=a b", "found 'b', expected: ',' or 'end of string'"),
    ("-app=web", 'invalid label key "-app"'),
    ("app=-web", 'invalid label value: "-web": at key: "app"'),
    ("replicas>x", "for 'Gt', 'Lt' operators, the value must be an integer"),
])
def test_parse_label_selector_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as failure:
        parse_label_selector(text)
    assert message in str(failure.value)


@pytest.mark.parametrize("selector, canonical, matches_web", [
    ({}, "", True),
    ({"matchLabels": {"tier": "front", "app": "web"}}, "app=web,tier=front", True),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]},
     "app in (api,web)", True),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]},
     "app notin (web)", False),
    ({"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]}, "!canary", True),
    ({"matchLabels": {"app": "web"},
      "matchExpressions": [{"key": "tier", "operator": "Exists"}]}, "app=web,tier", True),
])
def test_from_object(selector: dict, canonical: str, matches_web: bool) -> None:
    parsed = LabelSelector.from_object(selector)
    assert str(parsed) == canonical
    assert parsed.matches(WEB) is matches_web
    assert parsed.empty is (canonical == "")
    assert selector_to_string(selector) == canonical


@pytest.mark.parametrize("selector", [
    {"matchExpressions": [{"key": "app", "operator": "Near", "values": ["x"]}]},
    {"matchExpressions": [{"key": "app", "operator": "In", "values": []}]},
    {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]},
    {"matchLabels": {"app": "not valid"}},
])
def test_from_object_rejects(selector: dict) -> None:
    with pytest.raises(ValueError):
        LabelSelector.from_object(selector)
    assert selector_to_string(selector) == "<error>"


def test_absent_selector_matches_nothing() -> None:
    nothing = LabelSelector.from_object(None)
    assert not nothing.empty
    assert not nothing.matches({}) and not nothing.matches(WEB)


def test_label_formatting() -> None:
    assert format_labels({"b": "2", "a": "1"}) == "a=1,b=2"
    assert format_labels(None) == format_labels({}) == "<none>"
    assert format_label_selector({}) == "<none>"
    assert format_label_selector({"matchLabels": {"app": "web"}}) == "app=web"


# ------------------------------------------------------------------ field selectors

NODE_PODS = {"spec.nodeName": "n1", "status.phase": "Running", "metadata.name": "a,b"}


@pytest.mark.parametrize("text, requirements, matches", [
    ("", (), True),
    ("spec.nodeName=n1", (("spec.nodeName", "=", "n1"),), True),
    ("spec.nodeName==n1", (("spec.nodeName", "=", "n1"),), True),
    ("spec.nodeName!=n1", (("spec.nodeName", "!=", "n1"),), False),
    ("spec.nodeName=", (("spec.nodeName", "=", ""),), False),
    ("spec.schedulerName=", (("spec.schedulerName", "=", ""),), True),
    ("status.phase!=Failed,spec.nodeName=n1",
     (("spec.nodeName", "=", "n1"), ("status.phase", "!=", "Failed")), True),
    (r"metadata.name=a\,b", (("metadata.name", "=", "a,b"),), True),
])
def test_parse_field_selector(text: str, requirements: tuple, matches: bool) -> None:
    selector = parse_field_selector(text)
    assert selector.requirements == requirements
    assert selector.matches(NODE_PODS) is matches
    assert selector.empty is (not requirements)
    assert parse_field_selector(str(selector)) == selector


@pytest.mark.parametrize("text, message", [
    ("spec.nodeName", "invalid selector: 'spec.nodeName'; can't understand 'spec.nodeName'"),
    ("a=b=c", "unescaped character: ="),
    (r"a=b\x", "invalid escape sequence: \\x"),
])
def test_parse_field_selector_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as failure:
        parse_field_selector(text)
    assert str(failure.value) == message


def test_check_supported() -> None:
    selector = parse_field_selector("metadata.name=x,spec.foo=y")
    selector.check_supported({"metadata.name", "spec.foo"})
    with pytest.raises(ValueError, match="^field label not supported: spec.foo$"):
        selector.check_supported({"metadata.name"})
    FieldSelector().check_supported(set())

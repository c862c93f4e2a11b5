"""Hypothesis strategies for API objects, driven by the type schema (``controlplane.api.schema``).

- ``valid_objects(type_name)``: objects every field of which has the right JSON type, with
  metadata that passes name/label validation (so fuzzing reaches past decoding): what
  ``schema.decode`` must accept untouched.
- ``invalid_objects(type_name)``: a valid object with mutations a hostile or careless client
  makes: unknown fields, values of the wrong type, nulls, huge strings, odd unicode, deep
  nesting. What every layer must answer with a clear error or a clean object, never a crash.
- ``json_values()``: arbitrary JSON, for "never raises" properties.

Strategies are built once per type expression and cached; struct fields are optional (required
ones always present), and nesting beyond ``MAX_DEPTH`` structs yields only required fields.
"""

from __future__ import annotations

import base64
import functools
import string
from typing import Any

import hypothesis.strategies as st

from controlplane.api import schema

MAX_DEPTH = 4
MAX_ITEMS = 3
META = "io.k8s.apimachinery.pkg.apis.meta.v1"
OBJECT_META = f"{META}.ObjectMeta"
INT32 = (-(2 ** 31), 2 ** 31 - 1)
INT64 = (-(2 ** 63), 2 ** 63 - 1)

_ALNUM = string.ascii_lowercase + string.digits


def dns_labels(max_size: int = 20) -> st.SearchStrategy[str]:
    """RFC 1123 labels: what Kubernetes accepts as most object names."""
    middle = st.text(_ALNUM + "-", max_size=max(0, max_size - 2))
    return st.builds(lambda a, m, b: a + m + b if m else a + b,
                     st.sampled_from(_ALNUM), middle, st.sampled_from(_ALNUM))


def label_maps() -> st.SearchStrategy[dict[str, str]]:
    """Label keys and values that pass Kubernetes' label validation."""
    value = st.one_of(st.just(""), dns_labels(20))
    key = st.one_of(dns_labels(20), st.builds(lambda p, n: f"{p}.example.com/{n}",
                                              dns_labels(10), dns_labels(20)))
    return st.dictionaries(key, value, max_size=MAX_ITEMS)


def quantities() -> st.SearchStrategy[str]:
    """Quantity strings (JSON numbers are valid too, but decoding turns them into strings)."""
    number = st.integers(0, 10 ** 6).map(str)
    suffix = st.sampled_from(["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "e3"])
    return st.one_of(st.builds(str.__add__, number, suffix),
                     st.sampled_from(["0.5", "1.25Gi", "+1", "100m", ".5"]))


def date_times() -> st.SearchStrategy[str]:
    """RFC 3339 timestamps in UTC, with and without fractional seconds."""
    return st.builds(lambda d, frac: f"{d.year:04d}{d:-%m-%dT%H:%M:%S}{frac}Z",
                     st.datetimes(), st.sampled_from(["", ".5", ".123456"]))


def json_values(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    """Any JSON document (as ``json.loads`` gives it; floats are finite)."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(*INT64),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
        max_leaves=max_leaves)


def valid_objects(type_name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Objects of ``type_name`` whose every field decodes; kinds get their apiVersion/kind."""
    entry = schema.types()[type_name]
    strategy = _expr(type_name, 0)
    gvks = entry.get("gvk")
    if not gvks:
        return strategy
    gvk = gvks[0]
    api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
    return strategy.map(lambda obj: {**obj, "apiVersion": api_version, "kind": gvk["kind"]})


@functools.cache
def _expr(expr: str, depth: int) -> st.SearchStrategy[Any]:
    if expr.startswith("[]"):
        return st.lists(_expr(expr[2:], depth), max_size=MAX_ITEMS)
    if expr.startswith("{}"):
        return st.dictionaries(dns_labels(12), _expr(expr[2:], depth), max_size=MAX_ITEMS)
    if expr in _PRIMITIVES:
        return _PRIMITIVES[expr]
    entry = schema.types()[expr]
    if "scalar" in entry:
        return _SCALARS[entry["scalar"]]
    if expr == OBJECT_META:
        # Only what a client sets on create; server-owned fields would be overwritten anyway.
        return st.fixed_dictionaries({"name": dns_labels()}, optional={
            "labels": label_maps(), "annotations": st.dictionaries(
                dns_labels(20), st.text(max_size=50), max_size=MAX_ITEMS)})
    required = set(entry.get("required", ()))
    fields = {f: st.deferred(lambda e=e: _expr(e, depth + 1))
              for f, e in entry["properties"].items()}
    return st.fixed_dictionaries(
        {f: s for f, s in fields.items() if f in required},
        optional={} if depth >= MAX_DEPTH else {f: s for f, s in fields.items()
                                                if f not in required})


_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(max_size=20),
    "boolean": st.booleans(),
    "int32": st.integers(*INT32),
    "int64": st.integers(*INT64),
    "double": st.floats(allow_nan=False, allow_infinity=False),
    "byte": st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()),
}
_SCALARS: dict[str, st.SearchStrategy[Any]] = {
    "quantity": quantities(),
    "int-or-string": st.one_of(st.integers(0, 65535), st.sampled_from(["http", "25%", "0"])),
    "date-time": date_times(),
    "object": st.dictionaries(st.sampled_from(["f:metadata", "f:spec", "."]),
                              st.just({}), max_size=2),
}

# ------------------------------------------------------------------------- invalid objects

#: Strings that break naive code: huge, control characters, lone surrogates, RTL, NUL.
WEIRD_STRINGS = st.one_of(
    st.sampled_from(["", "\x00", "\ud800", "\u202e\u0645\u0631\u062d\u0628\u0627", "💥" * 50,
                     "a" * 100_000, "../../etc/passwd", "${jndi:x}", "\r\n\t", "null"]),
    st.text(max_size=30),
)
WRONG_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(*INT64), st.integers(2 ** 64, 2 ** 70),
    st.floats(), WEIRD_STRINGS, st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


@st.composite
def invalid_objects(draw: st.DrawFn, type_name: str) -> dict[str, Any]:
    """A valid object after 1-4 mutations at random places (each container node equally likely).

    Mutations: add an unknown field, replace a value by one of another JSON type (or null, a
    huge/odd string, a huge int, NaN), or nest the value deeply.
    """
    obj = draw(valid_objects(type_name))
    for _ in range(draw(st.integers(1, 4))):
        nodes = list(_containers(obj))
        node = draw(st.sampled_from(nodes))
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        mutation = draw(st.sampled_from(["unknown", "replace", "nest"] if keys else ["unknown"]))
        if mutation == "unknown":
            if isinstance(node, dict):
                node[draw(st.text(min_size=1, max_size=10))] = draw(WRONG_VALUES)
            else:
                node.append(draw(WRONG_VALUES))
        elif mutation == "replace":
            node[draw(st.sampled_from(keys))] = draw(WRONG_VALUES)
        else:
            key = draw(st.sampled_from(keys))
            for _ in range(draw(st.integers(1, 50))):
                node[key] = draw(st.sampled_from([[node[key]], {"x": node[key]}]))
    return obj


def _containers(value: Any) -> Any:
    """Every dict and list inside ``value`` (itself first), depth first."""
    if isinstance(value, (dict, list)):
        yield value
        for item in (value.values() if isinstance(value, dict) else value):
            yield from _containers(item)

"""The three PATCH bodies of the Kubernetes API, as pure functions of (object, patch).

Every function takes the current object and the decoded patch body, never mutates either, and
returns a new object (the current object is copied once with ``copy_json``, then patched in
place; values taken from the patch are copied on the way in). A patch that cannot be applied
raises ``PatchError`` carrying the HTTP answer Kubernetes gives.

Flow, in the order of the code:

1. ``PatchError``, ``copy_json`` and JSON equality (``1``, ``1.0`` and ``true`` differ as JSON
   types do, unlike in Python).
2. ``json_patch`` (RFC 6902, ``application/json-patch+json``): JSON pointers (RFC 6901,
   ``~0``/``~1`` escapes, ``-`` for the end of an array), then the six operations in order.
3. ``merge_patch`` (RFC 7386, ``application/merge-patch+json``): objects merge, ``null``
   deletes, everything else replaces.
4. ``strategic_merge_patch`` (``application/strategic-merge-patch+json``): Kubernetes' merge
   patch, which knows from ``patchmeta`` how each list merges. Per map: ``$patch`` (replace or
   delete the map), ``$retainKeys`` (drop the keys it does not list), ``$setElementOrder/<list>``
   (merge that list now and order it as the directive says: what kubectl's client-side apply
   sends), then the fields, then ``$deleteFromPrimitiveList/<list>``. Lists with a merge key
   merge element by element (``$patch: delete`` elements remove, a ``{"$patch": "replace"}``
   element makes the rest of the list replace it); primitive lists with strategy ``merge`` are
   unioned; other lists are replaced. The resulting order is Kubernetes': patch elements in
   patch order, interleaved with the elements only the server had, in their old order.

Where this differs from Kubernetes (``apimachinery/pkg/util/strategicpatch``), it is more
lenient or more predictable, never less: a map the patch adds where the object had none is
itself run through the patch, so its directives apply and its nulls drop as in a merge patch
(Kubernetes copies it verbatim, directives and all, and lets the typed decoder drop them; lists
that replace are copied verbatim by both); ``$setElementOrder`` on a list that does not merge is ignored
(Kubernetes fails); ``$deleteFromPrimitiveList`` on a missing list is a no-op (Kubernetes adds the
deletion list as the list); malformed directives are 400 where Kubernetes sometimes answers 500.
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable
from typing import Any

from . import patchmeta
from .errors import ApiError
from .patchmeta import Schema

Obj = dict[str, Any]

#: Strategic merge patch directives, as named in Kubernetes.
DIRECTIVE = "$patch"
DELETE = "delete"
REPLACE = "replace"
MERGE = "merge"
RETAIN_KEYS = "$retainKeys"
SET_ELEMENT_ORDER = "$setElementOrder"
DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList"


class PatchError(ValueError):
    """A patch that cannot be applied; ``code`` is the HTTP status the API answers with.

    400 BadRequest: the patch document is malformed. A JSON patch that is not a list of
    operation objects (Kubernetes fails to decode it), a merge patch that is not an object
    (``jsonpatch.ErrBadJSONPatch``), a strategic merge patch that is not an object or carries a
    malformed or unknown directive (``interpretStrategicMergePatchError`` answers the directive
    format errors with 400), an apply configuration that is not a valid object.

    422 Invalid: a well-formed JSON patch that cannot be applied to this object: a path that
    does not exist, an index out of range, an unknown ``op``, a failed ``test``. Kubernetes
    decodes the operations first and answers every failure of applying them with 422 (reason
    Invalid; its message is the generic "the server rejected our request due to an error in our
    request", ours keeps the detail).
    """

    def __init__(self, message: str, *, code: int = 422) -> None:
        super().__init__(message)
        self.code = code

    @property
    def reason(self) -> str:
        return "BadRequest" if self.code == 400 else "Invalid"

    def api_error(self) -> ApiError:
        """The Status error the handlers answer with."""
        return ApiError(self.code, self.reason, str(self))


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON tree; several times faster than ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: numbers by value, but ``true`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict):
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(json_equal(v, b[k]) for k, v in a.items()))
    if isinstance(a, list):
        return (isinstance(b, list) and len(a) == len(b)
                and all(json_equal(x, y) for x, y in zip(a, b)))
    return type(a) is type(b) and a == b


# ------------------------------------------------------------------ JSON patch (RFC 6902)

_BAD_ESCAPE = re.compile(r"~(?![01])")
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
_MISSING = object()


def json_patch(doc: Obj, ops: Any) -> Obj:
    """Apply an RFC 6902 JSON patch: the operations in order, all or nothing."""
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise PatchError("a JSON patch must be a list of operation objects", code=400)
    box = [copy_json(doc)]  # the root lives in a box so that "" can replace it
    for op in ops:
        _json_operation(box, op)
    if not isinstance(box[0], dict):
        raise PatchError("the patched document is not a JSON object")
    return box[0]


def _json_operation(box: list[Any], op: dict[str, Any]) -> None:
    kind = op.get("op")
    if kind == "add":
        _add(box, _pointer(op, "path"), copy_json(_value(op)), op["path"])
    elif kind == "remove":
        _remove(box, _pointer(op, "path"), op["path"], kind)
    elif kind == "replace":
        tokens, value = _pointer(op, "path"), copy_json(_value(op))
        if not tokens:
            box[0] = value
            return
        parent, key = _parent(box, tokens, op["path"], kind)
        if isinstance(parent, dict):
            if key not in parent:
                raise PatchError(f'replace operation does not apply: doc is missing key: '
                                 f'{op["path"]}')
            parent[key] = value
        else:
            parent[_index(key, len(parent), op["path"], kind, end=False)] = value
    elif kind == "move":
        source, target = _pointer(op, "from"), _pointer(op, "path")
        if source == target:
            _get(box, source, op["from"], kind)
            return
        if target[:len(source)] == source:
            raise PatchError(f'move operation does not apply: "{op["from"]}" is a prefix of '
                             f'"{op["path"]}"')
        _add(box, target, _remove(box, source, op["from"], kind), op["path"])
    elif kind == "copy":
        value = copy_json(_get(box, _pointer(op, "from"), op["from"], kind))
        _add(box, _pointer(op, "path"), value, op["path"])
    elif kind == "test":
        expected = _value(op)
        if not json_equal(_get(box, _pointer(op, "path"), op["path"], kind), expected):
            raise PatchError(f'testing value {op["path"]} failed: test failed')
    else:
        raise PatchError(f"unknown JSON patch operation: {json.dumps(kind)}")


def _pointer(op: dict[str, Any], field: str) -> list[str]:
    """The reference tokens of the operation's JSON pointer (RFC 6901)."""
    path = op.get(field)
    if not isinstance(path, str):
        raise PatchError(f'{op.get("op")} operation: missing "{field}"')
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f'invalid JSON pointer "{path}": it must start with "/"')
    tokens = path[1:].split("/")
    if "~" in path:
        if any(_BAD_ESCAPE.search(t) for t in tokens):
            raise PatchError(f'invalid JSON pointer "{path}": "~" must be followed by 0 or 1')
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in tokens]
    return tokens


def _value(op: dict[str, Any]) -> Any:
    if "value" not in op:
        raise PatchError(f'{op.get("op")} operation: missing "value"')
    return op["value"]


def _index(token: str, length: int, path: str, kind: str, *, end: bool) -> int:
    """The array index a token names; ``end`` allows ``length`` (and "-") for insertions."""
    if token == "-" and end:
        return length
    if not _ARRAY_INDEX.fullmatch(token):
        raise PatchError(f'{kind} operation does not apply: invalid array index "{token}" in '
                         f'{path}')
    index = int(token)
    if index > length or (index == length and not end):
        raise PatchError(f"{kind} operation does not apply: index {index} is out of range "
                         f"in {path}")
    return index


def _parent(box: list[Any], tokens: list[str], path: str, kind: str) -> tuple[Any, str]:
    """The container of the last token: a dict or a list."""
    current = box[0]
    for token in tokens[:-1]:
        current = _child(current, token)
        if current is _MISSING:
            break
    if not isinstance(current, (dict, list)):
        raise PatchError(f'{kind} operation does not apply: doc is missing path: "{path}"')
    return current, tokens[-1]


def _child(container: Any, token: str) -> Any:
    if isinstance(container, dict):
        return container.get(token, _MISSING)
    if isinstance(container, list) and _ARRAY_INDEX.fullmatch(token) \
            and int(token) < len(container):
        return container[int(token)]
    return _MISSING


def _get(box: list[Any], tokens: list[str], path: str, kind: str) -> Any:
    current = box[0]
    for token in tokens:
        current = _child(current, token)
        if current is _MISSING:
            raise PatchError(f'{kind} operation does not apply: doc is missing path: "{path}"')
    return current


def _add(box: list[Any], tokens: list[str], value: Any, path: str) -> None:
    if not tokens:
        box[0] = value
        return
    parent, key = _parent(box, tokens, path, "add")
    if isinstance(parent, dict):
        parent[key] = value
    else:
        parent.insert(_index(key, len(parent), path, "add", end=True), value)


def _remove(box: list[Any], tokens: list[str], path: str, kind: str) -> Any:
    if not tokens:
        raise PatchError(f"{kind} operation does not apply: the whole document cannot be removed")
    parent, key = _parent(box, tokens, path, kind)
    if isinstance(parent, dict):
        if key not in parent:
            raise PatchError(f'{kind} operation does not apply: doc is missing path: "{path}"')
        return parent.pop(key)
    return parent.pop(_index(key, len(parent), path, kind, end=False))


# ------------------------------------------------------------------ merge patch (RFC 7386)


def merge_patch(doc: Obj, patch: Any) -> Obj:
    """Apply an RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        raise PatchError("a merge patch must be a JSON object", code=400)
    return _merge_object(copy_json(doc), patch)


def _merge_object(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            target[key] = _merge_object(current if isinstance(current, dict) else {}, value)
        else:
            target[key] = copy_json(value)
    return target


# ------------------------------------------------------------------ strategic merge patch


def strategic_merge_patch(doc: Obj, patch: Any, group: str, kind: str) -> Obj:
    """Apply a Kubernetes strategic merge patch to an object of ``group``/``kind``."""
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object", code=400)
    return _smp_map(copy_json(doc), patch, patchmeta.schema(group, kind), "")


def _smp_map(original: dict[str, Any], patch: dict[str, Any], node: Schema,
             where: str) -> dict[str, Any]:
    """Merge ``patch`` into ``original`` (owned: changed in place) and return the result."""
    if DIRECTIVE in patch:
        directive = patch[DIRECTIVE]
        if directive == REPLACE:
            rest = {k: v for k, v in patch.items() if k != DIRECTIVE}
            return _smp_map({}, rest, node, where)
        if directive == DELETE:
            return {}
        raise PatchError(f"{where or 'patch'}: unknown patch directive "
                         f"{json.dumps({DIRECTIVE: directive})}", code=400)
    if RETAIN_KEYS in patch:
        _retain_keys(original, patch, where)
    ordered: set[str] = set()
    for key, value in patch.items():
        if key.startswith(SET_ELEMENT_ORDER):
            field = _directive_field(key, SET_ELEMENT_ORDER, where)
            if _set_element_order(original, patch, field, value, node.child(field),
                                  f"{where}.{field}"):
                ordered.add(field)
    deletions: list[tuple[str, Any]] = []
    for key, value in patch.items():
        if key.startswith("$"):
            if key.startswith(DELETE_FROM_PRIMITIVE_LIST):
                deletions.append((_directive_field(key, DELETE_FROM_PRIMITIVE_LIST, where), value))
            elif key != RETAIN_KEYS and not key.startswith(SET_ELEMENT_ORDER):
                raise PatchError(f"{where or 'patch'}: unknown directive {json.dumps(key)}",
                                 code=400)
            continue
        if key in ordered:
            continue
        if value is None:
            original.pop(key, None)
            continue
        child, at = node.child(key), f"{where}.{key}"
        current = original.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            original[key] = _smp_map(current, value, child, at)
        elif isinstance(current, list) and isinstance(value, list):
            original[key] = _smp_list(current, value, child, at)
        else:
            original[key] = _fresh(value, child, at)
    for field, values in deletions:
        _delete_from_primitive_list(original, field, values, f"{where}.{field}")
    return original


def _directive_field(key: str, prefix: str, where: str) -> str:
    head, sep, field = key.partition("/")
    if head != prefix or not sep or not field:
        what = "primitive list" if prefix == DELETE_FROM_PRIMITIVE_LIST else "setElementOrder list"
        raise PatchError(f"{where or 'patch'}: invalid patch format of {what}: "
                         f"{json.dumps(key)}", code=400)
    return field


def _fresh(value: Any, node: Schema, where: str) -> Any:
    """A patch value going where the object had nothing to merge with: copied, directives run."""
    if isinstance(value, dict):
        return _smp_map({}, value, node, where)
    if isinstance(value, list):
        return _smp_list([], value, node, where)
    return value


def _retain_keys(original: dict[str, Any], patch: dict[str, Any], where: str) -> None:
    """``$retainKeys``: every key the patch sets must be listed; unlisted keys are cleared."""
    keep = patch[RETAIN_KEYS]
    if not isinstance(keep, list):
        raise PatchError(f"{where or 'patch'}: invalid patch format of retainKeys", code=400)
    allowed = {k for k in keep if isinstance(k, str)}
    for key, value in patch.items():
        if value is not None and not key.startswith("$") and key not in allowed:
            raise PatchError(f"{where or 'patch'}: invalid patch format of retainKeys: "
                             f"{json.dumps(key)} is not in the $retainKeys list", code=400)
    for key in [k for k in original if k not in allowed]:
        del original[key]


def _ident(value: Any) -> Hashable:
    """Identity of a primitive element or merge-key value: its JSON type and value."""
    if isinstance(value, (dict, list)):
        return ("json", json.dumps(value, sort_keys=True))
    return (type(value), value)


def _item_ident(item: Any, key: str) -> Hashable:
    if not key:
        return _ident(item)
    if isinstance(item, dict) and key in item:
        return _ident(item[key])
    return ("missing", id(item))


def _keyed_item(item: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise PatchError(f"{where}: expected an object with merge key {json.dumps(key)}, "
                         f"found {json.dumps(item)}", code=400)
    if key not in item:
        raise PatchError(f"{where}: map: {json.dumps(item, sort_keys=True)} does not contain "
                         f"declared merge key: {key}", code=400)
    return item


def _set_element_order(original: dict[str, Any], patch: dict[str, Any], field: str,
                       order: Any, node: Schema, where: str) -> bool:
    """``$setElementOrder/<field>``: merge the list now and give it the directive's order.

    Returns whether the field was handled (the main loop then skips it).
    """
    if not isinstance(order, list):
        raise PatchError(f"{where}: invalid patch format of setElementOrder list", code=400)
    lt = node.list
    current, given = original.get(field), patch.get(field)
    if lt is None or not lt.merge or (field in patch and not isinstance(given, list)):
        return False  # nothing to order: the list is replaced or deleted by the main loop
    key = lt.merge_key
    if isinstance(given, list):
        _check_order(given, order, key, where)
    server_order = list(current) if isinstance(current, list) else []
    if isinstance(current, list) and isinstance(given, list):
        merged = _smp_list(current, given, node, where)
    elif isinstance(current, list):
        merged = current
    elif isinstance(given, list):
        merged = _smp_list([], given, node, where)
    else:
        return True
    wanted = {_item_ident(_keyed_item(x, key, where) if key else x, key) for x in order}
    in_patch = [x for x in merged if _item_ident(x, key) in wanted]
    server_only = [x for x in merged if _item_ident(x, key) not in wanted]
    original[field] = _normalize_order(in_patch, server_only, order, server_order, key)
    return True


def _check_order(given: list[Any], order: list[Any], key: str, where: str) -> None:
    """The patch's elements must appear in ``order``, in the same relative order."""
    if not given or not order:
        return
    items = [x for x in given
             if not (key and isinstance(x, dict) and x.get(DIRECTIVE) == DELETE)]
    i = j = 0
    while i < len(items) and j < len(order):
        item = items[i]
        if isinstance(item, dict) and DIRECTIVE in item:
            i += 1
            continue
        if key:
            same = _ident(_keyed_item(item, key, where)[key]) == \
                _ident(_keyed_item(order[j], key, where)[key])
        else:
            same = _ident(item) == _ident(order[j])
        if same:
            i += 1
        j += 1
    if i < len(items):
        raise PatchError(f"{where}: the order of the patch list does not match the "
                         f"$setElementOrder list", code=400)


def _smp_list(original: list[Any], patch: list[Any], node: Schema, where: str) -> list[Any]:
    """Merge a patch list into the object's list (owned) by the field's strategy."""
    lt = node.list
    if lt is None or not lt.merge:
        replacement: list[Any] = copy_json(patch)
        return replacement
    if not original and not patch:
        return original
    key = lt.merge_key
    if key:
        original, patch, replaced = _special_elements(original, patch, key, where)
        if replaced:
            replacement = copy_json(patch)
            return replacement
        server_order = list(original)  # merging appends to original
        merged = _merge_by_key(original, patch, key, node, where)
    else:
        if any(isinstance(x, (dict, list)) for x in original) \
                or any(isinstance(x, (dict, list)) for x in patch):
            raise PatchError(f"{where}: cannot merge lists without merge key", code=400)
        server_order, merged, seen = original, [], set()
        for value in original + patch:
            ident = _ident(value)
            if ident not in seen:
                seen.add(ident)
                merged.append(value)
    in_patch_ids = {_item_ident(x, key) for x in patch}
    in_patch = [x for x in merged if _item_ident(x, key) in in_patch_ids]
    server_only = [x for x in merged if _item_ident(x, key) not in in_patch_ids]
    return _normalize_order(in_patch, server_only, patch, server_order, key)


def _special_elements(original: list[Any], patch: list[Any], key: str,
                      where: str) -> tuple[list[Any], list[Any], bool]:
    """Apply ``$patch`` elements: (original after deletions, the other elements, replace?)."""
    plain: list[Any] = []
    replace = False
    for item in patch:
        if not isinstance(item, dict):
            _keyed_item(item, key, where)
        directive = item.get(DIRECTIVE, _MISSING)
        if directive is _MISSING:
            plain.append(item)
        elif directive == DELETE:
            gone = _ident(_keyed_item(item, key, where)[key])
            original = [x for x in original if _item_ident(x, key) != gone]
        elif directive == REPLACE:
            replace = True
        elif directive == MERGE:
            raise PatchError(f"{where}: merging lists cannot yet be specified in the patch",
                             code=400)
        else:
            raise PatchError(f"{where}: unknown patch directive "
                             f"{json.dumps({DIRECTIVE: directive})}", code=400)
    return original, plain, replace


def _merge_by_key(original: list[Any], patch: list[Any], key: str, node: Schema,
                  where: str) -> list[Any]:
    positions: dict[Hashable, int] = {}
    for i, item in enumerate(original):
        if isinstance(item, dict) and key in item:
            positions.setdefault(_ident(item[key]), i)
    for item in patch:
        ident = _ident(_keyed_item(item, key, where)[key])
        at = f"{where}[{key}={json.dumps(item[key])}]"
        at_index = positions.get(ident)
        if at_index is None:
            positions[ident] = len(original)
            original.append(_smp_map({}, item, node, at))
        else:
            original[at_index] = _smp_map(original[at_index], item, node, at)
    return original


def _normalize_order(in_patch: list[Any], server_only: list[Any], patch_order: list[Any],
                     server_order: list[Any], key: str) -> list[Any]:
    """Kubernetes' order: patch elements in patch order, server-only ones interleaved by their
    old positions (``normalizeElementOrder`` + ``mergeSortedSlice``)."""
    in_patch = _sorted_by(in_patch, patch_order, key)
    server_only = _sorted_by(server_only, server_order, key)
    old_position = _positions(server_order, key)
    out: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(in_patch):
        if j >= len(in_patch):
            out.append(server_only[i])
            i += 1
        elif i >= len(server_only):
            out.append(in_patch[j])
            j += 1
        else:
            left = old_position.get(_item_ident(server_only[i], key))
            right = old_position.get(_item_ident(in_patch[j], key))
            if left is not None and right is not None and left < right:
                out.append(server_only[i])
                i += 1
            else:
                out.append(in_patch[j])
                j += 1
    return out


def _positions(order: list[Any], key: str) -> dict[Hashable, int]:
    positions: dict[Hashable, int] = {}
    for i, item in enumerate(order):
        positions.setdefault(_item_ident(item, key), i)
    return positions


def _sorted_by(items: list[Any], order: list[Any], key: str) -> list[Any]:
    positions = _positions(order, key)
    return sorted(items, key=lambda x: positions.get(_item_ident(x, key), len(order)))


def _delete_from_primitive_list(original: dict[str, Any], field: str, values: Any,
                                where: str) -> None:
    if not isinstance(values, list):
        raise PatchError(f"{where}: invalid patch format of primitive list", code=400)
    current = original.get(field)
    if isinstance(current, list):
        gone = {_ident(v) for v in values}
        original[field] = [x for x in current if _ident(x) not in gone]

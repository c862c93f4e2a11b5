"""Server-side apply and ``metadata.managedFields``, as Kubernetes' field manager keeps them.

Every write records who set which field. An update (create, update, non-apply patch) takes
ownership of the fields whose value it changed or added, away from everyone else; an apply
states the complete set of fields its manager cares about: they are merged into the object,
fields the manager applied before and now leaves out are removed (unless someone else owns
them too), and a field that another manager owns and the apply would change is a conflict,
unless forced, which moves the ownership. See
https://kubernetes.io/docs/reference/using-api/server-side-apply/ and structured-merge-diff
(``merge/update.go``), whose semantics this module follows.

Flow, in the order of the code:

1. Field sets are ``fieldsV1`` dicts, used as they are stored: a tree of path elements
   (``f:<field>``, ``k:<JSON of the element's key fields>`` for associative lists,
   ``v:<JSON value>`` for sets); a node without children, or with a ``"."`` entry, is a
   *member* (an owned field), other nodes only lead to members. Set algebra (union, member-wise
   difference, subtree removal, common members) builds new dicts and never changes one, so
   unchanged sets are shared, not copied.
2. Reading objects, with the list semantics of ``patchmeta``: ``_added`` (the fields of a value
   an update added: new maps and lists are members themselves), ``_changes`` (what changed and
   what was removed between two objects), ``_applied_children`` (the fields an apply
   configuration sets; it rejects associative-list elements without their keys).
3. ``managedFields`` entries: decoding (``None`` when absent or malformed), encoding in
   Kubernetes' order (operation, time, manager).
4. ``track_update``: the hot path of every write; one walk over the changed parts of the object.
5. ``apply``: merge (maps by key, associative lists by their keys keeping Kubernetes' order,
   sets as sets, atomic values replaced), prune, conflicts, ownership.

Simplified against Kubernetes: one API version per kind (no conversion of field sets); the
Update managers are not capped at 10; equality of values is Python's (``1 == 1.0``); an apply
entry's time changes only when the object or the entry changed; fields in ``ignore``
(Kubernetes' reset fields, e.g. ``status`` on the main endpoint) are top-level names only;
which fields Kubernetes' empty Go object already has (so that an update never owns them
itself) comes from ``patchmeta``'s ``always_present`` table, not from Go types; a live list
that cannot be keyed (duplicate or missing keys) is treated as atomic; a malformed apply
configuration is 400 where Kubernetes sometimes answers 500. A null in a configuration is
owned by the applier and unsets the field, as Kubernetes' typed decoding makes it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from typing import Any

from . import patchmeta
from .errors import ApiError, Cause
from .patch import PatchError, copy_json
from .patchmeta import ATOMIC, MAP, ListType, Schema

log = logging.getLogger(__name__)

Obj = dict[str, Any]
#: A ``fieldsV1`` tree (see the module docstring).
Fields = dict[str, Any]
#: Removed parts of an object: path element -> True (the whole subtree) or a deeper Removed.
Removed = dict[str, Any]

MEMBER = "."
APPLY = "Apply"
UPDATE = "Update"
FIELDS_V1 = "FieldsV1"
#: Owner of everything in an object that had no managedFields when it was first applied to.
BEFORE_FIRST_APPLY = "before-first-apply"
#: Never tracked (Kubernetes' stripMetaManager): type fields and system metadata.
UNTRACKED = frozenset({"apiVersion", "kind"})
UNTRACKED_METADATA = frozenset({
    "name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName", "generation",
    "managedFields", "resourceVersion",
})
_PREFIXES = ("f:", "k:", "v:", "i:")
_MISSING = object()


# ------------------------------------------------------------------ field-set algebra


def _is_member(node: Fields) -> bool:
    return not node or MEMBER in node


def _kids(node: Fields) -> Fields:
    """The children of a node, without its member mark."""
    return {k: v for k, v in node.items() if k != MEMBER} if MEMBER in node else node


def _node(member: bool, children: Fields) -> Fields | None:
    """A node from its membership and children; None when it would hold nothing."""
    if children:
        return {MEMBER: {}, **children} if member else children
    return {} if member else None


def _union(a: Fields, b: Fields) -> Fields:
    """Children maps a ∪ b."""
    if not b or a is b:
        return a
    if not a:
        return b
    out = dict(a)
    for pe, bn in b.items():
        an = a.get(pe)
        if an is None:
            out[pe] = bn
        elif an is not bn:
            kids = _union(_kids(an), _kids(bn))
            member = _is_member(an) or _is_member(bn)
            out[pe] = {MEMBER: {}, **kids} if member and kids else kids or {}
    return out


def _subtract(a: Fields, b: Fields) -> Fields:
    """Children maps a − b, member by member (what b owns, a stops owning); a if untouched."""
    out = None
    for pe, bn in b.items():
        an = a.get(pe)
        if an is None:
            continue
        if out is None:
            out = dict(a)
        node = _node(_is_member(an) and not _is_member(bn), _subtract(_kids(an), _kids(bn)))
        if node is None:
            del out[pe]
        else:
            out[pe] = node
    return a if out is None else out


def _remove(a: Fields, removed: Removed) -> Fields:
    """Children map a without the removed subtrees; a if untouched."""
    out = None
    for pe, rn in removed.items():
        an = a.get(pe)
        if an is None:
            continue
        if out is None:
            out = dict(a)
        node = None if rn is True else _node(_is_member(an), _remove(_kids(an), rn))
        if node is None:
            del out[pe]
        else:
            out[pe] = node
    return a if out is None else out


def _common_members(a: Fields, b: Fields, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Paths that are members of both children maps."""
    for pe, bn in b.items():
        an = a.get(pe)
        if an is None or pe == MEMBER:
            continue
        path = prefix + (pe,)
        if _is_member(an) and _is_member(bn):
            yield path
        yield from _common_members(_kids(an), _kids(bn), path)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def path_string(elements: tuple[str, ...]) -> str:
    """A field path as Kubernetes prints it: ``.spec.containers[name="nginx"].image``."""
    return "".join(_element_string(pe) for pe in elements)


def _element_string(pe: str) -> str:
    kind, body = pe[:2], pe[2:]
    if kind == "f:":
        return "." + body
    try:
        if kind == "k:":
            fields = json.loads(body)
            return "[" + ",".join(f"{k}={_json(v)}" for k, v in sorted(fields.items())) + "]"
        if kind == "v:":
            return f"[={_json(json.loads(body))}]"
    except (ValueError, AttributeError):
        pass
    return f"[{body}]"


# ------------------------------------------------------------------ reading objects


_encode_string = json.encoder.encode_basestring  # C-accelerated; UTF-8 left as is, as Go does


def _scalar_json(value: Any) -> str:
    """JSON of a key value; the common cases without the cost of ``json.dumps``."""
    if isinstance(value, str):
        return _encode_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return _json(value)


def _key_element(item: dict[str, Any], lt: ListType) -> str | None:
    """``k:`` path element of an associative-list element (its key fields as a JSON object,
    sorted by name); None if a key field is missing and has no default."""
    parts = []
    for name in sorted(lt.map_keys):
        value = item.get(name)
        if value is None:
            value = dict(lt.key_defaults).get(name)
            if value is None:
                return None
        parts.append(f"{_encode_string(name)}:{_scalar_json(value)}")
    return "k:{" + ",".join(parts) + "}"


def _elements(items: list[Any], lt: ListType) -> list[tuple[str, Any]] | None:
    """(path element, element) of a map or set list; None when it cannot be keyed (an element
    of the wrong type, a missing key, a duplicate key): then it is treated as atomic."""
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for item in items:
        if lt.list_type == MAP:
            if not isinstance(item, dict):
                return None
            pe = _key_element(item, lt)
            if pe is None or pe in seen:
                return None
        else:
            if isinstance(item, (dict, list)):
                return None
            pe = "v:" + _scalar_json(item)
            if pe in seen:
                continue
        seen.add(pe)
        out.append((pe, item))
    return out


def _keyed(node: Schema) -> ListType | None:
    lt = node.list
    return lt if lt is not None and lt.list_type != ATOMIC else None


def _added(value: Any, node: Schema) -> Fields | None:
    """The fields of a value an update added where there was nothing."""
    if isinstance(value, dict):
        if not value:
            return None if node.always_present else {}
        if node.atomic:
            return {}
        children: Fields = {}
        for k, v in value.items():
            child = _added(v, node.child(k)) if v is not None else None
            if child is not None:
                children["f:" + k] = child
        return _node(not node.always_present, children)
    if isinstance(value, list):
        lt = _keyed(node)
        elements = _elements(value, lt) if lt is not None and value else None
        if lt is None or elements is None:
            return None if node.always_present and not value else {}
        return _node(not node.always_present,
                     {pe: _added_element(item, node, lt) for pe, item in elements})
    return {}


def _added_element(item: Any, node: Schema, lt: ListType) -> Fields:
    if lt.list_type != MAP:
        return {}
    children: Fields = {}
    for k, v in item.items():
        child = _added(v, node.child(k)) if v is not None else None
        if child is not None:
            children["f:" + k] = child
    return {MEMBER: {}, **children}


def _changes(old: Obj | None, new: Obj, root: Schema,
             ignore: Collection[str]) -> tuple[Fields, Removed]:
    """(fields changed or added, fields removed) from ``old`` to ``new``, untracked ones aside."""
    old = old or {}
    meta_changed: Fields = {}
    meta_removed: Removed = {}
    _diff_map(_meta(old), _meta(new), root.child("metadata"), meta_changed, meta_removed,
              UNTRACKED_METADATA)
    changed: Fields = {"f:metadata": meta_changed} if meta_changed else {}
    removed: Removed = {"f:metadata": meta_removed} if meta_removed else {}
    _diff_map(old, new, root, changed, removed, UNTRACKED | {"metadata"} | set(ignore))
    return changed, removed


def _meta(obj: Obj) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _diff_map(old: dict[str, Any], new: dict[str, Any], node: Schema, changed: Fields,
              removed: Removed, skip: Collection[str] = ()) -> None:
    for k, nv in new.items():
        if k in skip:
            continue
        ov = old.get(k, _MISSING)
        if ov is nv:
            continue
        if ov is _MISSING:
            added = _added(nv, node.child(k)) if nv is not None else None  # null: still unset
            if added is not None:
                changed["f:" + k] = added
        elif ov != nv or type(ov) is not type(nv):
            _diff_value("f:" + k, ov, nv, node.child(k), changed, removed)
    for k in old:
        if k not in new and k not in skip:
            removed["f:" + k] = True


def _diff_value(pe: str, ov: Any, nv: Any, node: Schema, changed: Fields,
                removed: Removed) -> None:
    if isinstance(ov, dict) and isinstance(nv, dict) and not node.atomic:
        sub_changed: Fields = {}
        sub_removed: Removed = {}
        _diff_map(ov, nv, node, sub_changed, sub_removed)
        if sub_changed:
            changed[pe] = sub_changed
        if sub_removed:
            removed[pe] = sub_removed
        return
    lt = _keyed(node)
    if lt is not None and isinstance(ov, list) and isinstance(nv, list) \
            and _diff_list(pe, ov, nv, node, lt, changed, removed):
        return
    if isinstance(ov, (dict, list)):
        removed[pe] = True  # what others owned inside the old value goes with it
    changed[pe] = {}


def _diff_list(pe: str, ov: list[Any], nv: list[Any], node: Schema, lt: ListType,
               changed: Fields, removed: Removed) -> bool:
    old_elements, new_elements = _elements(ov, lt), _elements(nv, lt)
    if old_elements is None or new_elements is None:
        return False
    old_items = dict(old_elements)
    sub_changed: Fields = {}
    sub_removed: Removed = {}
    for ipe, item in new_elements:
        old_item = old_items.pop(ipe, _MISSING)
        if old_item is _MISSING:
            sub_changed[ipe] = _added_element(item, node, lt)
        elif lt.list_type == MAP and old_item != item:
            item_changed: Fields = {}
            item_removed: Removed = {}
            _diff_map(old_item, item, node, item_changed, item_removed)
            if item_changed:
                sub_changed[ipe] = item_changed
            if item_removed:
                sub_removed[ipe] = item_removed
    for ipe in old_items:
        sub_removed[ipe] = True
    if sub_changed:
        changed[pe] = sub_changed
    if sub_removed:
        removed[pe] = sub_removed
    return True


def _applied_children(config: dict[str, Any], node: Schema, where: str,
                      skip: Collection[str] = ()) -> Fields:
    """The fields an apply configuration (a map of it) sets."""
    out: Fields = {}
    for k, v in config.items():
        if k not in skip:
            out["f:" + k] = _applied(v, node.child(k), f"{where}.{k}")
    return out


def _applied(value: Any, node: Schema, where: str) -> Fields:
    if isinstance(value, dict):
        if node.atomic or not value:
            return {}
        return _applied_children(value, node, where)
    if isinstance(value, list):
        lt = _keyed(node)
        if lt is None or not value:
            return {}
        out: Fields = {}
        for pe, item in _config_elements(value, lt, where):
            out[pe] = ({MEMBER: {}, **_applied_children(item, node, where + _element_string(pe))}
                       if lt.list_type == MAP else {})
        return out
    return {}


def _config_elements(items: list[Any], lt: ListType, where: str) -> list[tuple[str, Any]]:
    """Elements of an associative list or set in an apply configuration, which must be keyed."""
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if lt.list_type == MAP:
            if not isinstance(item, dict):
                raise PatchError(f"{where}: element {i}: expected an object, got "
                                 f"{_json(item)}", code=400)
            pe = _key_element(item, lt)
            if pe is None:
                missing = next(k for k in lt.map_keys
                               if item.get(k) is None and k not in dict(lt.key_defaults))
                raise PatchError(f"{where}: element {i}: associative list with keys has an "
                                 f"element that omits key field {json.dumps(missing)} (and "
                                 f"doesn't have default value)", code=400)
        else:
            if isinstance(item, (dict, list)):
                raise PatchError(f"{where}: element {i}: expected a value of a set, got "
                                 f"{_json(item)}", code=400)
            pe = "v:" + _json(item)
        if pe in seen:
            raise PatchError(f"{where}: duplicate entries for key {_element_string(pe)}",
                             code=400)
        seen.add(pe)
        out.append((pe, item))
    return out


# ------------------------------------------------------------------ managedFields entries

Key = tuple[str, str, str]  # (manager, operation, subresource)


@dataclass(frozen=True, slots=True)
class _Entry:
    manager: str
    operation: str
    subresource: str
    api_version: str
    time: str | None
    fields: Fields
    #: The encoded entry this came from, reused as long as nothing changes.
    raw: dict[str, Any] | None = None

    @property
    def description(self) -> str:
        """How Kubernetes names a manager in conflicts (``printManager``)."""
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == UPDATE:
            text += f" using {self.api_version}"
        return text


Managers = dict[Key, _Entry]


def _valid_fields(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    for pe, child in node.items():
        if pe == MEMBER:
            if child != {}:
                return False
        elif not isinstance(pe, str) or pe[:2] not in _PREFIXES or not _valid_fields(child):
            return False
    return True


def _decode(entries: Any, *, check: bool = False) -> Managers | None:
    """Managers of a managedFields list; None when it is absent, empty or malformed.

    ``check`` also validates every fieldsV1 tree (for lists a client sent).
    """
    if not isinstance(entries, list) or not entries:
        return None
    managers: Managers = {}
    for raw in entries:
        if not isinstance(raw, dict):
            return None
        manager, operation = raw.get("manager", ""), raw.get("operation")
        subresource, fields = raw.get("subresource") or "", raw.get("fieldsV1") or {}
        time = raw.get("time")
        if not isinstance(manager, str) or operation not in (APPLY, UPDATE) \
                or not isinstance(subresource, str) or not isinstance(fields, dict) \
                or raw.get("fieldsType", FIELDS_V1) != FIELDS_V1 \
                or (check and not _valid_fields(fields)):
            return None
        key = (manager, operation, subresource)
        if key in managers:
            return None
        managers[key] = _Entry(manager, operation, subresource, str(raw.get("apiVersion") or ""),
                               time if isinstance(time, str) else None, fields, raw)
    return managers


def _encode(managers: Managers) -> list[dict[str, Any]]:
    """managedFields in Kubernetes' order: Apply before Update, then by time and manager."""
    entries = sorted(managers.values(), key=lambda e: (
        e.operation, e.time or "", e.manager, e.api_version, e.subresource))
    return [e.raw if e.raw is not None else _encode_entry(e) for e in entries]


def _encode_entry(e: _Entry) -> dict[str, Any]:
    out: dict[str, Any] = {"manager": e.manager, "operation": e.operation,
                           "apiVersion": e.api_version}
    if e.time:
        out["time"] = e.time
    out["fieldsType"] = FIELDS_V1
    out["fieldsV1"] = e.fields
    if e.subresource:
        out["subresource"] = e.subresource
    return out


def _with_managed(obj: Obj, entries: list[dict[str, Any]] | None) -> Obj:
    """A shallow copy of ``obj`` whose metadata carries ``entries`` (none: no managedFields)."""
    meta = {k: v for k, v in _meta(obj).items() if k != "managedFields"}
    if entries:
        meta["managedFields"] = entries
    return {**obj, "metadata": meta}


# ------------------------------------------------------------------ updates


def track_update(old: Obj | None, new: Obj, *, manager: str, api_version: str, now: str,
                 subresource: str = "", ignore: Collection[str] = ()) -> Obj:
    """``new`` with managedFields updated for a non-apply write by ``manager``.

    The fields whose value ``manager`` changed or added become its own (operation Update) and
    nobody else's; fields removed from the object leave every set; empty entries go. As in
    Kubernetes, a non-empty managedFields list in ``new`` (not for subresources) is taken as
    the client's edit of them, ``[{}]`` removes them all, and anything else keeps ``old``'s.
    ``ignore`` names top-level fields this endpoint does not write (``status`` on the main
    endpoint of a kind with a status subresource). The result shares everything but its
    metadata with ``new``, and its unchanged managedFields entries with the inputs: treat them
    as read-only.
    """
    given = _meta(new).get("managedFields")
    if given == [{}]:
        return _with_managed(new, None)
    old_list = _meta(old).get("managedFields") if old else None
    managers, source = None, old_list
    if given and not subresource:
        if given is old_list or given == old_list:
            managers = _decode(old_list)
        else:
            managers = _decode(given, check=True)
            if managers is not None:
                source = given
            else:
                log.debug("ignoring malformed managedFields in an update by %s", manager)
    if managers is None:
        managers = _decode(old_list) or {}
    root = patchmeta.schema(api_version.rpartition("/")[0],
                            str(new.get("kind") or (old or {}).get("kind") or ""))
    changed, removed = _changes(old, new, root, ignore)
    if not changed and not removed:
        return _with_managed(new, source if managers else None)
    me = (manager, UPDATE, subresource)
    updated: Managers = {}
    for key, entry in managers.items():
        fields = entry.fields
        if key != me:
            fields = _subtract(fields, changed)
        fields = _remove(fields, removed)
        if key == me:
            fields = _union(fields, changed)
        if fields:
            updated[key] = entry if fields is entry.fields else replace(entry, fields=fields,
                                                                       raw=None)
    if changed:
        mine = updated.get(me)
        updated[me] = (_Entry(manager, UPDATE, subresource, api_version, now, changed)
                       if mine is None
                       else replace(mine, api_version=api_version, time=now, raw=None))
    return _with_managed(new, _encode(updated))


# ------------------------------------------------------------------ apply


class ApplyConflict(Exception):
    """An apply would change fields other managers own: 409 Conflict.

    ``conflicts`` lists (other manager, field path) pairs; ``causes()`` gives them as
    Kubernetes' ``FieldManagerConflict`` StatusCauses and the message is Kubernetes'
    ``Apply failed with 1 conflict: conflict with "mgr" using apps/v1: .spec.replicas``.
    """

    def __init__(self, found: list[tuple[_Entry, str]]) -> None:
        order = sorted({e.description: (e.manager, e.operation, e.subresource)
                        for e, _ in found}.items(), key=lambda item: item[1])
        by_manager = {description: [p for e, p in found if e.description == description]
                      for description, _ in order}
        manager_of = {e.description: e.manager for e, _ in found}
        self._described = [(d, p) for d, paths in by_manager.items() for p in paths]
        self.conflicts: list[tuple[str, str]] = [(manager_of[d], p) for d, p in self._described]
        super().__init__(_conflict_message(by_manager))

    def causes(self) -> list[Cause]:
        return [{"reason": "FieldManagerConflict", "message": f"conflict with {d}", "field": p}
                for d, p in self._described]

    def api_error(self) -> ApiError:
        return ApiError(409, "Conflict", str(self), causes=self.causes())


def _conflict_message(by_manager: dict[str, list[str]]) -> str:
    count = sum(len(paths) for paths in by_manager.values())
    if count == 1:
        (description, [path]), = by_manager.items()
        return f"Apply failed with 1 conflict: conflict with {description}: {path}"
    lines = []
    for description, paths in by_manager.items():
        lines.append(f"conflicts with {description}:")
        lines.extend(f"- {p}" for p in paths)
    return f"Apply failed with {count} conflicts: " + "\n".join(lines)


def apply(live: Obj | None, config: Obj, *, manager: str, force: bool, group: str, kind: str,
          api_version: str, now: str, ignore: Collection[str] = ()) -> Obj:
    """The object after ``manager`` applies ``config`` to ``live`` (None: create).

    Raises ``ApplyConflict`` (409) when the apply would change another manager's fields and
    ``force`` is false, ``PatchError`` (400) for a malformed configuration. The result is a
    new object; only its unchanged managedFields entries are ``live``'s own (read-only).
    """
    _check_config(config, kind, api_version)
    root = patchmeta.schema(group, kind)
    meta = config.get("metadata") or {}
    meta_fields = _applied_children(meta, root.child("metadata"), ".metadata", UNTRACKED_METADATA)
    applied = {"f:metadata": meta_fields} if meta_fields else {}
    applied.update(_applied_children(config, root, "", UNTRACKED | {"metadata"} | set(ignore)))
    managers = _live_managers(live, root, api_version, now, ignore)
    merged = copy_json(live) if live is not None else {}
    if isinstance(merged.get("metadata"), dict):
        merged["metadata"].pop("managedFields", None)
    nulls: list[tuple[dict[str, Any], str]] = []
    _merge_map(merged, config, root, nulls)

    me = (manager, APPLY, "")
    last = managers.get(me)
    managers[me] = _Entry(manager, APPLY, "", api_version, last.time if last else None, applied)
    if last is not None:
        _prune(merged, last.fields, [e.fields for e in managers.values()], root)
    changed, removed = _changes(live, merged, root, ignore)

    found = [(entry, path_string(path))
             for key, entry in managers.items() if key != me and changed
             for path in _common_members(entry.fields, changed, ())]
    if found and not force:
        log.debug("apply by %s conflicts on %d fields", manager, len(found))
        raise ApplyConflict(found)
    conflicted = {id(entry) for entry, _ in found}
    updated: Managers = {}
    for key, entry in managers.items():
        fields = entry.fields
        if key != me:
            if id(entry) in conflicted:
                fields = _subtract(fields, changed)
            fields = _remove(fields, removed)
        if fields:
            updated[key] = entry if fields is entry.fields else replace(entry, fields=fields,
                                                                       raw=None)
    if me in updated and (changed or removed or last is None or last.fields != applied):
        updated[me] = replace(updated[me], time=now)
    for parent, name in nulls:
        if parent.get(name, _MISSING) is None:
            del parent[name]
    return _with_managed(merged, _encode(updated))


def _check_config(config: Any, kind: str, api_version: str) -> None:
    if not isinstance(config, dict):
        raise PatchError("the apply configuration must be a JSON object", code=400)
    if config.get("apiVersion") != api_version:
        raise PatchError(f"Incorrect version specified in apply patch. Specified patch "
                         f"version: {config.get('apiVersion') or ''}, expected: {api_version}",
                         code=400)
    if config.get("kind") != kind:
        raise PatchError(f"Incorrect kind specified in apply patch. Specified patch kind: "
                         f"{config.get('kind') or ''}, expected: {kind}", code=400)
    meta = config.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise PatchError("metadata must be an object", code=400)
    if meta is not None and meta.get("managedFields") is not None:
        raise PatchError("metadata.managedFields must be nil", code=400)


def _live_managers(live: Obj | None, root: Schema, api_version: str, now: str,
                   ignore: Collection[str]) -> Managers:
    """The live object's managers; an object never tracked is owned by before-first-apply."""
    if live is None:
        return {}
    managers = _decode(_meta(live).get("managedFields"))
    if managers is not None:
        return managers
    fields, _ = _changes(None, live, root, ignore)
    if not fields:
        return {}
    key = (BEFORE_FIRST_APPLY, UPDATE, "")
    return {key: _Entry(BEFORE_FIRST_APPLY, UPDATE, "", api_version, now, fields)}


def _without_nulls(value: Any) -> Any:
    """A copy of a configuration value, without the nulls of its maps (they mean "unset")."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _merge_map(target: dict[str, Any], config: dict[str, Any], node: Schema,
               nulls: list[tuple[dict[str, Any], str]]) -> None:
    """Merge a configuration map into ``target`` (owned, changed in place).

    A null sets the field to null for the comparison with the live object (changing another
    manager's field to null is a conflict) and is removed at the end (``nulls``).
    """
    for k, cv in config.items():
        if cv is None:
            target[k] = None
            nulls.append((target, k))
        else:
            target[k] = _merge_value(target.get(k, _MISSING), cv, node.child(k), nulls)


def _merge_value(tv: Any, cv: Any, node: Schema, nulls: list[tuple[dict[str, Any], str]]) -> Any:
    if isinstance(cv, dict):
        if isinstance(tv, dict) and not node.atomic:
            _merge_map(tv, cv, node, nulls)
            return tv
        return _without_nulls(cv)
    if isinstance(cv, list):
        lt = _keyed(node)
        if lt is not None and isinstance(tv, list):
            merged = _merge_list(tv, cv, node, lt, nulls)
            if merged is not None:
                return merged
        return _without_nulls(cv)
    return cv


def _merge_list(tv: list[Any], cv: list[Any], node: Schema, lt: ListType,
                nulls: list[tuple[dict[str, Any], str]]) -> list[Any] | None:
    """Merge an associative list or set; None when the live list cannot be keyed.

    The order is structured-merge-diff's: elements of both lists take the configuration's
    order, elements only the live object has keep their place among them, new ones follow
    their predecessor in the configuration.
    """
    lhs, rhs = _elements(tv, lt), _elements(cv, lt)
    if lhs is None or rhs is None:
        return None
    live_items, config_items = dict(lhs), dict(rhs)
    shared = [pe for pe, _ in rhs if pe in live_items]
    next_shared = 0
    done: set[str] = set()
    out: list[Any] = []

    def merged(pe: str) -> Any:
        done.add(pe)
        current, wanted = live_items.get(pe, _MISSING), config_items[pe]
        if current is _MISSING:
            return _without_nulls(wanted)
        if lt.list_type == MAP:
            _merge_map(current, wanted, node, nulls)
            return current
        return wanted

    li = ri = 0
    while li < len(lhs) or ri < len(rhs):
        want = shared[next_shared] if next_shared < len(shared) else None
        if li < len(lhs) and ri < len(rhs):
            pe = lhs[li][0]
            if pe == rhs[ri][0]:
                out.append(merged(pe))
                li, ri, next_shared = li + 1, ri + 1, next_shared + 1
                continue
            if pe in config_items and want is not None and want != pe:
                li += 1  # shared, but its turn comes with the configuration's order
                continue
        if li < len(lhs):
            pe = lhs[li][0]
            if pe not in config_items:
                out.append(lhs[li][1])
                li += 1
                continue
            if pe in done:
                li += 1
                continue
        if ri < len(rhs):
            pe = rhs[ri][0]
            out.append(merged(pe))
            ri += 1
            if want == pe:
                next_shared += 1
    return out


def _prune(obj: dict[str, Any], last: Fields, owners: list[Fields], node: Schema) -> None:
    """Remove from ``obj`` (owned) what the applier applied before (``last``) and nobody owns
    now (``owners`` include the applier's new set). A field counts as owned when anyone owns
    it or something in it; a list element only when someone owns the element itself."""
    for pe, last_node in last.items():
        if not pe.startswith("f:") or pe[2:] not in obj:
            continue
        name, child = pe[2:], node.child(pe[2:])
        now = [o[pe] for o in owners if pe in o]
        if not now and not child.always_present:
            del obj[name]
            continue
        kids = _kids(last_node)
        if kids:
            _prune_value(obj[name], kids, [_kids(n) for n in now], child)


def _prune_value(value: Any, last: Fields, owners: list[Fields], node: Schema) -> None:
    if isinstance(value, dict):
        if not node.atomic:
            _prune(value, last, owners, node)
        return
    lt = _keyed(node)
    elements = _elements(value, lt) if lt is not None and isinstance(value, list) else None
    if elements is None:
        return
    keep = []
    for pe, item in elements:
        last_node = last.get(pe)
        if last_node is None:
            keep.append(item)
            continue
        now = [o[pe] for o in owners if pe in o]
        if _is_member(last_node) and not any(_is_member(n) for n in now):
            continue
        kids = _kids(last_node)
        if kids and isinstance(item, dict):
            _prune(item, kids, [_kids(n) for n in now], node)
        keep.append(item)
    if len(keep) != len(value):
        value[:] = keep

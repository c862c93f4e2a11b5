"""Pod volumes on the node: from ``spec.volumes`` and each container's ``volumeMounts`` to the
``Mount``s the runtime bind-mounts, laid out on disk as the kubelet does.

The flow, in the order the code below appears:

1. Layout. A pod's volumes live under ``<root>/<pod uid>/volumes/<plugin>/<volume name>``, with
   the kubelet's plugin directory names (``kubernetes.io~empty-dir``, ``kubernetes.io~configmap``,
   ...). Nothing else is kept: after an agent restart ``pod_uids_on_disk`` tells which pods have
   directories, so the agent can remove those of pods no longer bound to it.
2. Payloads (pure). A configMap, secret, downwardAPI or projected volume is a *payload*: relative
   path -> (bytes, mode), built by ``configmap_payload``, ``secret_payload`` and
   ``downward_api_payload`` exactly as the kubelet's ``MakePayload``/``CollectData`` (``items``
   select and rename keys, per-item ``mode`` over ``defaultMode``, 0644 when neither is given;
   a missing optional source is an empty payload, a missing optional key is skipped).
3. ``atomic_write`` is the kubelet's AtomicWriter: the payload is written to a fresh hidden
   timestamped directory (``..2024_05_01_10_00_00.123``), a ``..data_tmp`` symlink to it is
   renamed over ``..data`` (one rename(2): a reader sees the old files or the new ones, never a
   mix), the visible names are symlinks through ``..data`` (``key -> ..data/key``), and then the
   old directory is removed. Writing the same payload again changes nothing. An update of a
   ConfigMap or Secret is applied by calling ``VolumeManager.setup`` again.
4. ``check_host_path_type`` is the kubelet's hostPath type check (and the creation that
   ``DirectoryOrCreate`` and ``FileOrCreate`` do); ``subpath_host_path`` resolves a
   ``volumeMount.subPath`` safely (relative, no ``..``, never leaving the volume through a
   symlink; a missing directory is created with the volume directory's mode).
5. ``VolumeManager`` is the shell: ``setup(pod)`` fetches the ConfigMaps and Secrets through the
   ``SourceLookup`` (async), then does all the file work in one ``asyncio.to_thread`` call, and
   returns each container's mounts. ``cleanup(pod_uid)`` removes the pod's directory.

Errors are ``VolumeError``; ``reason`` tells how the kubelet reports it: ``FailedMount`` Events
(``MountVolume.SetUp failed for volume "cfg" : configmap "app" not found``) for a volume that
cannot be set up, ``CreateContainerConfigError`` for a mount that cannot be made (an unknown
volume name, a bad subPath).

Deliberate gaps: ``emptyDir`` with ``medium: Memory`` is a plain directory (no tmpfs, which needs
root) and ``sizeLimit`` is not enforced (the kubelet enforces it by eviction, which the agent does
not do); the ``serviceAccountToken`` (and ``clusterTrustBundle``) sources of a projected volume
are skipped with a warning, the agent has no token to project; files are not chowned
(``fsGroup``, ``defaultUser``); ``subPathExpr`` is refused. Every other volume type
(persistentVolumeClaim, nfs, ...) is refused as unsupported.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nodeagent.envvars import (
    CONFIGMAPS,
    REASON_CREATE_CONTAINER_CONFIG_ERROR,
    SECRETS,
    SourceLookup,
    configmap_binary_data,
    container_resource_value,
    field_path_value,
    not_found_message,
    secret_data,
)
from nodeagent.runtime.base import Mount

log = logging.getLogger(__name__)

Obj = dict[str, Any]

REASON_FAILED_MOUNT = "FailedMount"

#: Per-volume-type directory names, as the kubelet's plugins name them.
PLUGIN_EMPTY_DIR = "kubernetes.io~empty-dir"
PLUGIN_CONFIGMAP = "kubernetes.io~configmap"
PLUGIN_SECRET = "kubernetes.io~secret"
PLUGIN_DOWNWARD_API = "kubernetes.io~downward-api"
PLUGIN_PROJECTED = "kubernetes.io~projected"
PLUGINS = {"emptyDir": PLUGIN_EMPTY_DIR, "configMap": PLUGIN_CONFIGMAP, "secret": PLUGIN_SECRET,
           "downwardAPI": PLUGIN_DOWNWARD_API, "projected": PLUGIN_PROJECTED}
#: hostPath has no directory of ours: the mount is the host's path itself.
SUPPORTED_TYPES = (*PLUGINS, "hostPath")
#: Volume types whose content the agent writes: always mounted read-only, as the kubelet does.
READ_ONLY_TYPES = frozenset({"configMap", "secret", "downwardAPI", "projected"})

#: ``defaultMode`` when the API did not default it (files are 0644, also for Secrets).
DEFAULT_FILE_MODE = 0o644
DIR_MODE = 0o755
#: The kubelet makes an emptyDir world-writable, so that any container user can write it.
EMPTY_DIR_MODE = 0o777

#: AtomicWriter names.
DATA_DIR_NAME = "..data"
NEW_DATA_DIR_NAME = "..data_tmp"
TIMESTAMP_FORMAT = "..%Y_%m_%d_%H_%M_%S."
_TIMESTAMP_DIR = re.compile(r"\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\..+")
MAX_PATH_LENGTH = 4096
MAX_FILE_NAME_LENGTH = 255

#: hostPath ``type`` values (HostPathType).
HOST_PATH_UNSET = ""
HOST_PATH_DIRECTORY_OR_CREATE = "DirectoryOrCreate"
HOST_PATH_DIRECTORY = "Directory"
HOST_PATH_FILE_OR_CREATE = "FileOrCreate"
HOST_PATH_FILE = "File"
HOST_PATH_SOCKET = "Socket"
HOST_PATH_CHAR_DEVICE = "CharDevice"
HOST_PATH_BLOCK_DEVICE = "BlockDevice"


class VolumeError(Exception):
    """A volume cannot be set up or mounted. The message is the kubelet's; ``reason`` is how it
    reports it (``FailedMount`` Event, or the container's ``CreateContainerConfigError``)."""

    def __init__(self, message: str, *, reason: str = REASON_FAILED_MOUNT) -> None:
        super().__init__(message)
        self.reason = reason


def setup_failed(volume: str, detail: str) -> VolumeError:
    """The kubelet's FailedMount text for a volume."""
    return VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : {detail}')


def _config_error(message: str) -> VolumeError:
    return VolumeError(message, reason=REASON_CREATE_CONTAINER_CONFIG_ERROR)


# ------------------------------------------------------------------ payloads (pure)

@dataclass(frozen=True)
class FileProjection:
    data: bytes
    mode: int = DEFAULT_FILE_MODE


Payload = dict[str, FileProjection]


def _mode(value: Any, default: int) -> int:
    return (int(value) if value is not None else default) & 0o777


def key_payload(kind: str, data: Mapping[str, bytes], items: Iterable[Mapping[str, Any]],
                default_mode: int | None, optional: bool) -> Payload:
    """``MakePayload`` of the configmap and secret plugins: every key as a file of its name, or
    only ``items`` (key -> path, with an optional ``mode``). ``kind`` is "configmap" or
    "secret", for the kubelet's missing-key text."""
    default = _mode(default_mode, DEFAULT_FILE_MODE)
    items = list(items or [])
    if not items:
        return {key: FileProjection(value, default) for key, value in data.items()}
    payload: Payload = {}
    for item in items:
        key = item.get("key", "")
        if key not in data:
            if optional:
                continue
            raise ValueError(f"configmap references non-existent config key: {key}"
                             if kind == "configmap" else
                             f"references non-existent secret key: {key}")
        payload[item.get("path", "")] = FileProjection(data[key], _mode(item.get("mode"), default))
    return payload


def configmap_payload(source: Mapping[str, Any], configmap: Obj | None) -> Payload:
    """A configMap volume's (or projection's) files; ``configmap`` None when it is absent (the
    caller has already decided it may be: ``optional``). ``data`` and ``binaryData`` both."""
    data: dict[str, bytes] = {}
    if configmap is not None:
        data = {k: str(v).encode() for k, v in (configmap.get("data") or {}).items()}
        data.update(configmap_binary_data(configmap))
    return key_payload("configmap", data, source.get("items") or [],
                       source.get("defaultMode"), bool(source.get("optional")))


def secret_payload(source: Mapping[str, Any], secret: Obj | None) -> Payload:
    """A secret volume's or projection's files, decoded."""
    data = secret_data(secret) if secret is not None else {}
    return key_payload("secret", data, source.get("items") or [],
                       source.get("defaultMode"), bool(source.get("optional")))


def downward_api_payload(items: Iterable[Mapping[str, Any]], pod: Obj, default_mode: int | None,
                         *, allocatable: Mapping[str, str | int | float] | None = None) -> Payload:
    """``downwardapi.CollectData``: each item's ``fieldRef`` (metadata only) or
    ``resourceFieldRef`` (``containerName`` required) as a file. All errors are collected and
    reported together, as the kubelet's aggregate."""
    default = _mode(default_mode, DEFAULT_FILE_MODE)
    payload: Payload = {}
    errors: list[str] = []
    for item in items or []:
        path = os.path.normpath(item.get("path", ""))
        mode = _mode(item.get("mode"), default)
        data = b""
        try:
            if item.get("fieldRef") is not None:
                data = field_path_value(pod, item["fieldRef"].get("fieldPath", "")).encode()
            elif item.get("resourceFieldRef") is not None:
                data = container_resource_value(item["resourceFieldRef"], pod, None,
                                                allocatable=allocatable).encode()
        except ValueError as exc:
            errors.append(str(exc))
        payload[path] = FileProjection(data, mode)
    if errors:
        raise ValueError(aggregate(errors))
    return payload


def aggregate(errors: list[str]) -> str:
    """``utilerrors.NewAggregate(...).Error()``: one message as is, several as ``[a, b]``."""
    unique = list(dict.fromkeys(errors))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


def validate_payload_path(path: str) -> None:
    """AtomicWriter's ``validatePath``: relative, no ``..`` element, not a hidden ``..name``."""
    if path == "":
        raise ValueError(f'invalid path: must not be empty: "{path}"')
    if path.startswith("/"):
        raise ValueError(f"invalid path: must be relative path: {path}")
    if len(path) > MAX_PATH_LENGTH:
        raise ValueError(f"invalid path: must be less than or equal to {MAX_PATH_LENGTH} characters")
    items = path.split("/")
    for item in items:
        if item == "..":
            raise ValueError(f"invalid path: must not contain '..': {path}")
        if len(item) > MAX_FILE_NAME_LENGTH:
            raise ValueError("invalid path: filenames must be less than or equal to "
                             f"{MAX_FILE_NAME_LENGTH} characters")
    if items[0].startswith("..") and len(items[0]) > 2:
        raise ValueError(f"invalid path: must not start with '..': {path}")


# ------------------------------------------------------------------ the atomic writer (disk)

def _read_tree(directory: Path) -> Payload:
    """The files under a timestamped directory, as a payload (to tell whether to rewrite)."""
    tree: Payload = {}
    for dirpath, _dirnames, filenames in os.walk(directory, followlinks=False):
        for filename in filenames:
            full = Path(dirpath, filename)
            info = full.lstat()
            if not stat.S_ISREG(info.st_mode):
                continue
            tree[str(full.relative_to(directory))] = FileProjection(
                full.read_bytes(), stat.S_IMODE(info.st_mode))
    return tree


def _write_payload(directory: Path, payload: Mapping[str, FileProjection]) -> None:
    for path, projection in payload.items():
        full = directory / path
        parent = full.parent
        if parent != directory and not parent.is_dir():
            parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, projection.mode)
        try:
            os.write(fd, projection.data)
            os.fchmod(fd, projection.mode)    # past the umask
        finally:
            os.close(fd)
    for dirpath, dirnames, _ in os.walk(directory):
        for name in dirnames:
            os.chmod(Path(dirpath, name), DIR_MODE)


def _top_level(paths: Iterable[str]) -> set[str]:
    return {path.split("/", 1)[0] for path in paths}


def atomic_write(target: Path, payload: Mapping[str, FileProjection], *,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> bool:
    """Makes ``target`` show exactly ``payload``, switching from the old content in one
    rename; True when something was written (False when it already showed this payload)."""
    for path in payload:
        validate_payload_path(path)
    clean = {os.path.normpath(path): projection for path, projection in payload.items()}
    target.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    data_link = target / DATA_DIR_NAME
    old_name = os.readlink(data_link) if data_link.is_symlink() else None
    old_dir = target / old_name if old_name else None
    old_tree = _read_tree(old_dir) if old_dir is not None and old_dir.is_dir() else None
    old_paths = set(old_tree or ())
    changed = old_tree is None or old_tree != clean
    if changed:
        new_dir = Path(tempfile.mkdtemp(prefix=now().strftime(TIMESTAMP_FORMAT), dir=target))
        os.chmod(new_dir, DIR_MODE)
        _write_payload(new_dir, clean)
        new_link = target / NEW_DATA_DIR_NAME
        if os.path.lexists(new_link):
            os.unlink(new_link)
        os.symlink(new_dir.name, new_link)
        os.replace(new_link, data_link)
        log.debug("volume %s: ..data -> %s", target, new_dir.name)
    visible = _top_level(clean)
    for name in sorted(visible):
        if not os.path.lexists(target / name):
            os.symlink(f"{DATA_DIR_NAME}/{name}", target / name)
    for name in sorted(_top_level(old_paths) - visible):
        if (target / name).is_symlink():
            os.unlink(target / name)
    if changed:
        current = os.readlink(data_link)
        for entry in target.iterdir():    # the old directory, and any a crash left behind
            if _TIMESTAMP_DIR.fullmatch(entry.name) and entry.name != current \
                    and not entry.is_symlink():
                shutil.rmtree(entry)
    return changed


# ------------------------------------------------------------------ hostPath and subPath

def check_host_path_type(path: str, path_type: str | None) -> None:
    """The hostPath plugin's type check; ``DirectoryOrCreate`` makes the directory (0755, with
    parents), ``FileOrCreate`` an empty file (0644, not its parent directory). ValueError with
    the kubelet's text."""
    path_type = path_type or HOST_PATH_UNSET
    if path_type == HOST_PATH_UNSET:
        return
    exists = os.path.exists(path)
    if path_type == HOST_PATH_DIRECTORY_OR_CREATE and not exists:
        os.makedirs(path, mode=DIR_MODE, exist_ok=True)
        return
    if path_type == HOST_PATH_FILE_OR_CREATE and not exists:
        try:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, DEFAULT_FILE_MODE))
        except OSError as exc:
            raise ValueError(f"open {path}: {os.strerror(exc.errno or errno.EIO).lower()}") from exc
        return
    checks: dict[str, tuple[Callable[[int], bool], str]] = {
        HOST_PATH_DIRECTORY_OR_CREATE: (stat.S_ISDIR, "a directory"),
        HOST_PATH_DIRECTORY: (stat.S_ISDIR, "a directory"),
        HOST_PATH_FILE_OR_CREATE: (stat.S_ISREG, "a file"),
        HOST_PATH_FILE: (stat.S_ISREG, "a file"),
        HOST_PATH_SOCKET: (stat.S_ISSOCK, "a socket file"),
        HOST_PATH_CHAR_DEVICE: (stat.S_ISCHR, "a character device"),
        HOST_PATH_BLOCK_DEVICE: (stat.S_ISBLK, "a block device"),
    }
    if path_type not in checks:
        raise ValueError(f"{path_type} is an invalid volume type")
    test, what = checks[path_type]
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = 0
    if not test(mode):
        raise ValueError(f"hostPath type check failed: {path} is not {what}")


def _within(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def subpath_host_path(volume_path: str, sub_path: str) -> str:
    """The host path of ``subPath`` inside a volume, created as directories when missing (with
    the volume directory's mode, as the kubelet). The result is resolved: a symlink may lead
    elsewhere in the volume, never out of it. ValueError with the kubelet's text."""
    if os.path.isabs(sub_path):
        raise ValueError(f"error SubPath `{sub_path}` must not be an absolute path")
    if ".." in sub_path.replace("\\", "/").split("/"):
        raise ValueError(f"unable to provision SubPath `{sub_path}`: must not contain '..'")
    base = os.path.realpath(volume_path)
    current = base
    for part in [p for p in sub_path.split("/") if p not in ("", ".")]:
        candidate = os.path.join(current, part)
        if not os.path.lexists(candidate):
            os.mkdir(candidate)
            os.chmod(candidate, stat.S_IMODE(os.stat(base).st_mode))
        current = os.path.realpath(candidate)
        if not _within(current, base):
            raise ValueError(f'subpath "{candidate}" not within volume path "{base}"')
    return current


# ------------------------------------------------------------------ the manager (shell)

@dataclass
class _Plan:
    """What one volume needs on disk, decided before any file is touched."""
    name: str
    kind: str
    host_path: str = ""
    host_path_type: str = ""
    payload: Payload = field(default_factory=dict)


def _volume_kind(volume: Mapping[str, Any]) -> str:
    """The volume's source type; a volume with no source is an emptyDir (API defaulting)."""
    kinds = [key for key, value in volume.items() if key != "name" and value is not None]
    if not kinds:
        return "emptyDir"
    for kind in kinds:
        if kind not in SUPPORTED_TYPES:
            return kind
    return kinds[0]


def _check_component(kind: str, value: str) -> None:
    """A pod uid or volume name becomes one path component; refuse anything that is not."""
    if not value or value in (".", "..") or "/" in value or "\0" in value:
        raise VolumeError(f"invalid {kind} {value!r}")


class VolumeManager:
    """Sets up a pod's volumes under ``root`` and says what each container mounts.

    ``setup`` is idempotent, and calling it again is how ConfigMap and Secret updates reach a
    running pod (only changed volumes are rewritten, atomically). Calls for one pod are
    serialized; different pods run concurrently."""

    def __init__(self, root: Path, lookup: SourceLookup, *,
                 allocatable: Mapping[str, str | int | float] | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.root = Path(root)
        self.lookup = lookup
        self.allocatable = allocatable
        self._now = now
        self._locks: dict[str, asyncio.Lock] = {}
        self._warned: set[tuple[str, str, str]] = set()

    def pod_dir(self, pod_uid: str) -> Path:
        _check_component("pod uid", pod_uid)
        return self.root / pod_uid

    def volume_dir(self, pod_uid: str, kind: str, name: str) -> Path:
        """``<root>/<uid>/volumes/<plugin>/<name>``: where a volume of ``kind`` lives."""
        _check_component("volume name", name)
        return self.pod_dir(pod_uid) / "volumes" / PLUGINS[kind] / name

    async def setup(self, pod: Obj) -> dict[str, tuple[Mount, ...]]:
        """Sets up every volume of the pod and returns, per container name (init and regular),
        the mounts of its ``volumeMounts`` in order. VolumeError when a volume cannot be set up
        or a mount cannot be made."""
        uid = (pod.get("metadata") or {}).get("uid") or ""
        _check_component("pod uid", uid)
        lock = self._locks.setdefault(uid, asyncio.Lock())
        async with lock:
            plans = [await self._plan(pod, uid, volume)
                     for volume in (pod.get("spec") or {}).get("volumes") or []]
            return await asyncio.to_thread(self._apply, pod, uid, plans)

    async def cleanup(self, pod_uid: str) -> None:
        """Removes the pod's directory (call once its containers are gone). Symlinks are removed,
        never followed, so nothing outside ``root`` is touched (hostPath volumes are not under
        ``root`` at all)."""
        path = self.pod_dir(pod_uid)
        lock = self._locks.setdefault(pod_uid, asyncio.Lock())
        async with lock:
            await asyncio.to_thread(_remove_tree, path)
        self._locks.pop(pod_uid, None)
        self._warned = {w for w in self._warned if w[0] != pod_uid}

    async def pod_uids_on_disk(self) -> set[str]:
        """Pod uids that have a directory under ``root`` (to remove orphans after a restart)."""
        def scan() -> set[str]:
            try:
                entries = list(os.scandir(self.root))
            except FileNotFoundError:
                return set()
            return {e.name for e in entries if e.is_dir(follow_symlinks=False)}
        return await asyncio.to_thread(scan)

    # -------------------------------------------------------------- planning (async reads)

    async def _plan(self, pod: Obj, uid: str, volume: Mapping[str, Any]) -> _Plan:
        name = volume.get("name", "")
        _check_component("volume name", name)
        kind = _volume_kind(volume)
        if kind not in SUPPORTED_TYPES:
            raise setup_failed(name, f"volume type {kind} is not supported by this node")
        source = volume.get(kind) or {}
        namespace = (pod.get("metadata") or {}).get("namespace") or "default"
        try:
            if kind == "hostPath":
                return _Plan(name, kind, host_path=source.get("path", ""),
                             host_path_type=source.get("type") or "")
            if kind == "emptyDir":
                return _Plan(name, kind)
            if kind == "configMap":
                obj = await self._source(CONFIGMAPS, namespace, source.get("name", ""),
                                         bool(source.get("optional")))
                return _Plan(name, kind, payload=configmap_payload(source, obj))
            if kind == "secret":
                obj = await self._source(SECRETS, namespace, source.get("secretName", ""),
                                         bool(source.get("optional")))
                return _Plan(name, kind, payload=secret_payload(source, obj))
            if kind == "downwardAPI":
                return _Plan(name, kind, payload=downward_api_payload(
                    source.get("items") or [], pod, source.get("defaultMode"),
                    allocatable=self.allocatable))
            return _Plan(name, kind, payload=await self._projected(pod, uid, name, source))
        except ValueError as exc:
            raise setup_failed(name, str(exc)) from exc

    async def _source(self, resource: str, namespace: str, name: str, optional: bool
                      ) -> Obj | None:
        obj = await self.lookup.get(resource, namespace, name)
        if obj is None and not optional:
            raise ValueError(not_found_message(resource, name))
        return obj

    async def _projected(self, pod: Obj, uid: str, volume: str, source: Mapping[str, Any]
                         ) -> Payload:
        """The projected plugin's ``collectData``: the sources' payloads merged in order, all
        errors reported together."""
        namespace = (pod.get("metadata") or {}).get("namespace") or "default"
        default_mode = source.get("defaultMode")
        payload: Payload = {}
        errors: list[str] = []
        for projection in source.get("sources") or []:
            try:
                if projection.get("configMap") is not None:
                    ref = {**projection["configMap"], "defaultMode": default_mode}
                    obj = await self._source(CONFIGMAPS, namespace, ref.get("name", ""),
                                             bool(ref.get("optional")))
                    payload.update(configmap_payload(ref, obj))
                elif projection.get("secret") is not None:
                    ref = {**projection["secret"], "defaultMode": default_mode}
                    obj = await self._source(SECRETS, namespace, ref.get("name", ""),
                                             bool(ref.get("optional")))
                    payload.update(secret_payload(ref, obj))
                elif projection.get("downwardAPI") is not None:
                    payload.update(downward_api_payload(
                        projection["downwardAPI"].get("items") or [], pod, default_mode,
                        allocatable=self.allocatable))
                else:
                    kind = next(iter(projection), "unknown")
                    if (uid, volume, kind) not in self._warned:
                        self._warned.add((uid, volume, kind))
                        log.warning("pod %s volume %s: projected source %s is not supported by "
                                    "this node agent; its files are not written", uid, volume,
                                    kind)
            except ValueError as exc:
                errors.append(str(exc))
        if errors:
            raise ValueError(aggregate(errors))
        return payload

    # -------------------------------------------------------------- applying (in a thread)

    def _apply(self, pod: Obj, uid: str, plans: list[_Plan]) -> dict[str, tuple[Mount, ...]]:
        self.root.mkdir(parents=True, exist_ok=True)
        paths: dict[str, tuple[str, str]] = {}    # volume name -> (host path, kind)
        for plan in plans:
            try:
                paths[plan.name] = (self._materialize(uid, plan), plan.kind)
            except ValueError as exc:
                raise setup_failed(plan.name, str(exc)) from exc
            except OSError as exc:
                raise setup_failed(plan.name, str(exc)) from exc
        spec = pod.get("spec") or {}
        mounts: dict[str, tuple[Mount, ...]] = {}
        for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            mounts[container["name"]] = tuple(
                _mount(container["name"], volume_mount, paths)
                for volume_mount in container.get("volumeMounts") or [])
        return mounts

    def _materialize(self, uid: str, plan: _Plan) -> str:
        """Puts one volume on disk; returns the host path to mount."""
        if plan.kind == "hostPath":
            check_host_path_type(plan.host_path, plan.host_path_type)
            return plan.host_path
        target = self.volume_dir(uid, plan.kind, plan.name)
        if plan.kind == "emptyDir":
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, EMPTY_DIR_MODE)
            return str(target)
        target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if atomic_write(target, plan.payload, now=self._now):
            log.info("pod %s volume %s (%s): content written", uid, plan.name, plan.kind)
        return str(target)


def _mount(container: str, volume_mount: Mapping[str, Any],
           paths: Mapping[str, tuple[str, str]]) -> Mount:
    """The kubelet's ``makeMounts`` for one ``volumeMount``."""
    name = volume_mount.get("name", "")
    if name not in paths:
        raise _config_error(f'cannot find volume "{name}" to mount into container "{container}"')
    host_path, kind = paths[name]
    if volume_mount.get("subPathExpr"):
        raise _config_error(f'volumeMount "{name}" of container "{container}": subPathExpr is '
                            "not supported by this node agent")
    sub_path = volume_mount.get("subPath") or ""
    if sub_path:
        try:
            host_path = subpath_host_path(host_path, sub_path)
        except ValueError as exc:
            raise _config_error(str(exc)) from exc
        except OSError as exc:
            log.warning("subPath %s of volume %s: %s", sub_path, name, exc)
            raise _config_error(f'failed to create subPath directory for volumeMount "{name}" '
                                f'of container "{container}"') from exc
    read_only = bool(volume_mount.get("readOnly")) or kind in READ_ONLY_TYPES
    return Mount(container_path=volume_mount.get("mountPath", ""), host_path=host_path,
                 read_only=read_only)


def _remove_tree(path: Path) -> None:
    """Removes ``path`` without following a symlink anywhere (rmtree unlinks links in the tree;
    a link in place of the directory itself is unlinked)."""
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        if not shutil.rmtree.avoids_symlink_attacks:
            log.warning("rmtree is not symlink-attack safe on this platform")
        shutil.rmtree(path)

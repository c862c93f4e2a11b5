"""volumes: a Pod's volumes on disk under tmp_path, laid out and updated as the kubelet's
plugins and AtomicWriter do, and the Mounts each container gets."""

from __future__ import annotations

import base64
import os
import socket
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nodeagent.envvars import DictLookup
from nodeagent.runtime.base import Mount
from nodeagent.volumes import (
    DATA_DIR_NAME,
    PLUGIN_CONFIGMAP,
    PLUGIN_DOWNWARD_API,
    PLUGIN_EMPTY_DIR,
    PLUGIN_PROJECTED,
    PLUGIN_SECRET,
    REASON_CREATE_CONTAINER_CONFIG_ERROR,
    REASON_FAILED_MOUNT,
    FileProjection,
    VolumeError,
    VolumeManager,
    atomic_write,
    check_host_path_type,
    validate_payload_path,
)

UID = "pod-uid-1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def make_pod(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]],
             init_mounts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"volumes": volumes,
                            "containers": [{"name": "main", "image": "x", "volumeMounts": mounts,
                                            "resources": {"limits": {"memory": "64Mi"}}}]}
    if init_mounts is not None:
        spec["initContainers"] = [{"name": "init", "image": "x", "volumeMounts": init_mounts}]
    return {"metadata": {"name": "web", "namespace": "default", "uid": UID,
                         "labels": {"app": "web"}, "annotations": {"a": "1"}},
            "spec": spec}


@pytest.fixture
def lookup() -> DictLookup:
    return DictLookup(
        configmaps=[{"metadata": {"name": "app", "namespace": "default"},
                     "data": {"app.conf": "port=80\n", "level": "debug"},
                     "binaryData": {"blob": b64(b"\x00\x01")}}],
        secrets=[{"metadata": {"name": "db", "namespace": "default"},
                  "data": {"password": b64(b"s3cr3t"), "user": b64(b"root")}}])


@pytest.fixture
def manager(tmp_path: Path, lookup: DictLookup) -> VolumeManager:
    return VolumeManager(tmp_path / "pods", lookup)


def vdir(manager: VolumeManager, plugin: str, name: str) -> Path:
    return manager.root / UID / "volumes" / plugin / name


def files(path: Path) -> dict[str, tuple[bytes, int]]:
    """Visible files of a volume (through the symlinks), with their modes."""
    out = {}
    for dirpath, _dirs, names in os.walk(path, followlinks=True):
        if DATA_DIR_NAME in Path(dirpath).relative_to(path).parts or \
                any(p.startswith("..") for p in Path(dirpath).relative_to(path).parts):
            continue
        for name in names:
            full = Path(dirpath, name)
            if name.startswith(".."):
                continue
            out[str(full.relative_to(path))] = (full.read_bytes(), stat.S_IMODE(full.stat().st_mode))
    return out


# ------------------------------------------------------------------ each type

async def test_empty_dir(manager: VolumeManager) -> None:
    pod = make_pod([{"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                    {"name": "bare"}],
                   [{"name": "scratch", "mountPath": "/scratch"},
                    {"name": "bare", "mountPath": "/bare", "readOnly": True}],
                   init_mounts=[{"name": "scratch", "mountPath": "/work"}])
    mounts = await manager.setup(pod)
    path = vdir(manager, PLUGIN_EMPTY_DIR, "scratch")
    assert path.is_dir() and stat.S_IMODE(path.stat().st_mode) == 0o777
    assert mounts == {
        "init": (Mount("/work", str(path), False),),
        "main": (Mount("/scratch", str(path), False),
                 Mount("/bare", str(vdir(manager, PLUGIN_EMPTY_DIR, "bare")), True)),
    }
    (path / "keep").write_text("x")
    await manager.setup(pod)    # idempotent: content survives
    assert (path / "keep").read_text() == "x"


async def test_configmap_all_keys(manager: VolumeManager) -> None:
    pod = make_pod([{"name": "cfg", "configMap": {"name": "app"}}],
                   [{"name": "cfg", "mountPath": "/etc/app"}])
    mounts = await manager.setup(pod)
    path = vdir(manager, PLUGIN_CONFIGMAP, "cfg")
    assert mounts["main"] == (Mount("/etc/app", str(path), True),)    # always read-only
    assert files(path) == {"app.conf": (b"port=80\n", 0o644), "level": (b"debug", 0o644),
                           "blob": (b"\x00\x01", 0o644)}
    assert os.readlink(path / "level") == "..data/level"
    assert (path / DATA_DIR_NAME).is_symlink()


async def test_configmap_items_and_modes(manager: VolumeManager) -> None:
    pod = make_pod([{"name": "cfg", "configMap": {
        "name": "app", "defaultMode": 0o600,
        "items": [{"key": "app.conf", "path": "conf/main.conf", "mode": 0o400},
                  {"key": "level", "path": "level.txt"}]}}],
        [{"name": "cfg", "mountPath": "/etc/app"}])
    await manager.setup(pod)
    path = vdir(manager, PLUGIN_CONFIGMAP, "cfg")
    assert files(path) == {"conf/main.conf": (b"port=80\n", 0o400), "level.txt": (b"debug", 0o600)}
    data = path / DATA_DIR_NAME
    assert stat.S_IMODE((data / "conf").stat().st_mode) == 0o755
    assert os.readlink(path / "conf") == "..data/conf"


async def test_secret(manager: VolumeManager) -> None:
    pod = make_pod([{"name": "creds", "secret": {"secretName": "db"}}],
                   [{"name": "creds", "mountPath": "/creds", "readOnly": False}])
    mounts = await manager.setup(pod)
    path = vdir(manager, PLUGIN_SECRET, "creds")
    assert files(path) == {"password": (b"s3cr3t", 0o644), "user": (b"root", 0o644)}
    assert mounts["main"][0].read_only


async def test_downward_api(manager: VolumeManager) -> None:
    pod = make_pod([{"name": "info", "downwardAPI": {"items": [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "app", "fieldRef": {"fieldPath": "metadata.labels['app']"}, "mode": 0o600},
        {"path": "mem", "resourceFieldRef": {"containerName": "main",
                                             "resource": "limits.memory", "divisor": "1Mi"}},
    ]}}], [{"name": "info", "mountPath": "/info"}])
    await manager.setup(pod)
    assert files(vdir(manager, PLUGIN_DOWNWARD_API, "info")) == {
        "labels": (b'app="web"', 0o644), "name": (b"web", 0o644), "app": (b"web", 0o600),
        "mem": (b"64", 0o644)}


async def test_downward_api_rejects_status_fields(manager: VolumeManager) -> None:
    pod = make_pod([{"name": "info", "downwardAPI": {"items": [
        {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]}}], [])
    with pytest.raises(VolumeError, match='volume "info" : unsupported fieldPath: status.podIP'):
        await manager.setup(pod)


async def test_projected(manager: VolumeManager) -> None:
    pod = make_pod([{"name": "all", "projected": {"defaultMode": 0o640, "sources": [
        {"serviceAccountToken": {"path": "token"}},
        {"configMap": {"name": "app", "items": [{"key": "level", "path": "level"}]}},
        {"secret": {"name": "db", "items": [{"key": "user", "path": "db/user", "mode": 0o400}]}},
        {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        {"configMap": {"name": "absent", "optional": True}},
    ]}}], [{"name": "all", "mountPath": "/all"}])
    await manager.setup(pod)
    assert files(vdir(manager, PLUGIN_PROJECTED, "all")) == {
        "level": (b"debug", 0o640), "db/user": (b"root", 0o400), "ns": (b"default", 0o640)}


async def test_projected_aggregates_errors(manager: VolumeManager) -> None:
    pod = make_pod([{"name": "all", "projected": {"sources": [
        {"configMap": {"name": "nope"}}, {"secret": {"name": "gone"}}]}}], [])
    with pytest.raises(VolumeError) as info:
        await manager.setup(pod)
    assert str(info.value) == ('MountVolume.SetUp failed for volume "all" : '
                               '[configmap "nope" not found, secret "gone" not found]')


# ------------------------------------------------------------------ missing sources

async def test_optional_missing_sources_are_empty(manager: VolumeManager) -> None:
    pod = make_pod([{"name": "c", "configMap": {"name": "nope", "optional": True}},
                    {"name": "s", "secret": {"secretName": "nope", "optional": True}},
                    {"name": "k", "configMap": {"name": "app", "optional": True,
                                                "items": [{"key": "missing", "path": "m"}]}}],
                   [{"name": "c", "mountPath": "/c"}])
    await manager.setup(pod)
    for plugin, name in [(PLUGIN_CONFIGMAP, "c"), (PLUGIN_SECRET, "s"), (PLUGIN_CONFIGMAP, "k")]:
        path = vdir(manager, plugin, name)
        assert (path / DATA_DIR_NAME).is_dir() and files(path) == {}


@pytest.mark.parametrize("volume, message", [
    ({"name": "cfg", "configMap": {"name": "app2"}},
     'MountVolume.SetUp failed for volume "cfg" : configmap "app2" not found'),
    ({"name": "s", "secret": {"secretName": "db2"}},
     'MountVolume.SetUp failed for volume "s" : secret "db2" not found'),
    ({"name": "cfg", "configMap": {"name": "app", "items": [{"key": "nokey", "path": "x"}]}},
     ('MountVolume.SetUp failed for volume "cfg" : '
      "configmap references non-existent config key: nokey")),
    ({"name": "s", "secret": {"secretName": "db", "items": [{"key": "nokey", "path": "x"}]}},
     'MountVolume.SetUp failed for volume "s" : references non-existent secret key: nokey'),
    ({"name": "cfg", "configMap": {"name": "app", "items": [{"key": "level", "path": "../x"}]}},
     "MountVolume.SetUp failed for volume \"cfg\" : invalid path: must not contain '..': ../x"),
    ({"name": "data", "persistentVolumeClaim": {"claimName": "pvc"}},
     ('MountVolume.SetUp failed for volume "data" : '
      "volume type persistentVolumeClaim is not supported by this node")),
    ({"name": "n", "nfs": {"server": "s", "path": "/"}},
     'MountVolume.SetUp failed for volume "n" : volume type nfs is not supported by this node'),
])
async def test_setup_errors(manager: VolumeManager, volume: dict[str, Any], message: str) -> None:
    with pytest.raises(VolumeError) as info:
        await manager.setup(make_pod([volume], []))
    assert str(info.value) == message
    assert info.value.reason == REASON_FAILED_MOUNT


# ------------------------------------------------------------------ updates

async def test_update_swaps_atomically(manager: VolumeManager, lookup: DictLookup) -> None:
    pod = make_pod([{"name": "cfg", "configMap": {"name": "app"}}],
                   [{"name": "cfg", "mountPath": "/etc/app"}])
    await manager.setup(pod)
    path = vdir(manager, PLUGIN_CONFIGMAP, "cfg")
    first = os.readlink(path / DATA_DIR_NAME)
    assert first.startswith("..") and (path / first).is_dir()

    await manager.setup(pod)    # same content: nothing rewritten
    assert os.readlink(path / DATA_DIR_NAME) == first

    lookup.put("configmaps", {"metadata": {"name": "app", "namespace": "default"},
                              "data": {"level": "info", "new": "n"}})
    await manager.setup(pod)
    second = os.readlink(path / DATA_DIR_NAME)
    assert second != first and (path / second).is_dir()
    assert not (path / first).exists()                       # old timestamped dir removed
    assert not os.path.lexists(path / "app.conf")            # removed key's link removed
    assert files(path) == {"level": (b"info", 0o644), "new": (b"n", 0o644)}
    hidden = sorted(p.name for p in path.iterdir() if p.name.startswith(".."))
    assert hidden == sorted([DATA_DIR_NAME, second])


def test_atomic_write_mode_change_rewrites_and_timestamp_names(tmp_path: Path) -> None:
    clock = iter([datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC),
                  datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC) + timedelta(seconds=5)])
    target = tmp_path / "vol"
    assert atomic_write(target, {"a": FileProjection(b"x", 0o644)}, now=lambda: next(clock))
    assert os.readlink(target / DATA_DIR_NAME).startswith("..2024_05_01_10_00_00.")
    assert atomic_write(target, {"a": FileProjection(b"x", 0o600)}, now=lambda: next(clock))
    assert os.readlink(target / DATA_DIR_NAME).startswith("..2024_05_01_10_00_05.")
    assert stat.S_IMODE((target / "a").stat().st_mode) == 0o600


def test_atomic_write_removes_crash_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    target.mkdir()
    (target / "..2020_01_01_00_00_00.123").mkdir()
    (target / "..data_tmp").symlink_to("..2020_01_01_00_00_00.123")
    atomic_write(target, {"a": FileProjection(b"x")})
    names = {p.name for p in target.iterdir()}
    assert names == {DATA_DIR_NAME, "a", os.readlink(target / DATA_DIR_NAME)}


@pytest.mark.parametrize("path, ok", [
    ("a", True), ("a/b", True), ("..a", False), ("a/../b", False), ("/abs", False), ("", False),
    ("a/..b", True), ("x" * 256, False),
])
def test_validate_payload_path(path: str, ok: bool) -> None:
    if ok:
        validate_payload_path(path)
    else:
        with pytest.raises(ValueError):
            validate_payload_path(path)


# ------------------------------------------------------------------ hostPath

async def test_host_path_types(tmp_path: Path, manager: VolumeManager) -> None:
    host = tmp_path / "host"
    pod = make_pod([{"name": "d", "hostPath": {"path": str(host / "made/deep"),
                                               "type": "DirectoryOrCreate"}},
                    {"name": "f", "hostPath": {"path": str(host / "made/file"),
                                               "type": "FileOrCreate"}},
                    {"name": "any", "hostPath": {"path": str(host / "absent")}}],
                   [{"name": "d", "mountPath": "/d", "readOnly": True},
                    {"name": "f", "mountPath": "/f"}])
    mounts = await manager.setup(pod)
    assert (host / "made/deep").is_dir() and stat.S_IMODE((host / "made/deep").stat().st_mode) == 0o755
    assert (host / "made/file").is_file() and (host / "made/file").read_bytes() == b""
    assert not (host / "absent").exists()    # type "": no check, nothing made
    assert mounts["main"] == (Mount("/d", str(host / "made/deep"), True),
                              Mount("/f", str(host / "made/file"), False))


def test_check_host_path_type(tmp_path: Path) -> None:
    directory, file = tmp_path / "dir", tmp_path / "file"
    directory.mkdir()
    file.write_text("x")
    sock_path = tmp_path / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        check_host_path_type(str(directory), "Directory")
        check_host_path_type(str(file), "File")
        check_host_path_type(str(file), "FileOrCreate")
        check_host_path_type(str(sock_path), "Socket")
        check_host_path_type(str(tmp_path / "nothing"), "")
        for path, kind, message in [
            (file, "Directory", f"hostPath type check failed: {file} is not a directory"),
            (directory, "DirectoryOrCreate", None),
            (file, "DirectoryOrCreate", f"hostPath type check failed: {file} is not a directory"),
            (directory, "File", f"hostPath type check failed: {directory} is not a file"),
            (tmp_path / "no", "File", f"hostPath type check failed: {tmp_path / 'no'} is not a file"),
            (file, "Socket", f"hostPath type check failed: {file} is not a socket file"),
            (file, "CharDevice", f"hostPath type check failed: {file} is not a character device"),
            (file, "BlockDevice", f"hostPath type check failed: {file} is not a block device"),
            (file, "Weird", "Weird is an invalid volume type"),
            (tmp_path / "no/parent", "FileOrCreate",
             f"open {tmp_path / 'no/parent'}: no such file or directory"),
        ]:
            if message is None:
                check_host_path_type(str(path), kind)
                continue
            with pytest.raises(ValueError) as info:
                check_host_path_type(str(path), kind)
            assert str(info.value) == message
    finally:
        sock.close()
    check_host_path_type("/dev/null", "CharDevice")


async def test_host_path_failure_is_failed_mount(tmp_path: Path, manager: VolumeManager) -> None:
    pod = make_pod([{"name": "h", "hostPath": {"path": str(tmp_path / "x"), "type": "Directory"}}],
                   [])
    with pytest.raises(VolumeError) as info:
        await manager.setup(pod)
    assert str(info.value) == (f'MountVolume.SetUp failed for volume "h" : '
                               f"hostPath type check failed: {tmp_path / 'x'} is not a directory")


# ------------------------------------------------------------------ mounts and subPath

async def test_sub_path(tmp_path: Path, manager: VolumeManager) -> None:
    pod = make_pod([{"name": "scratch", "emptyDir": {}},
                    {"name": "cfg", "configMap": {"name": "app"}}],
                   [{"name": "scratch", "mountPath": "/a", "subPath": "x/y"},
                    {"name": "cfg", "mountPath": "/etc/app.conf", "subPath": "app.conf"}])
    mounts = await manager.setup(pod)
    scratch = vdir(manager, PLUGIN_EMPTY_DIR, "scratch")
    created = scratch / "x" / "y"
    assert created.is_dir() and stat.S_IMODE(created.stat().st_mode) == 0o777
    cfg = vdir(manager, PLUGIN_CONFIGMAP, "cfg")
    resolved = os.path.realpath(cfg / "app.conf")    # through ..data to the current file
    assert mounts["main"] == (Mount("/a", str(created), False),
                              Mount("/etc/app.conf", resolved, True))
    assert Path(resolved).read_bytes() == b"port=80\n"


@pytest.mark.parametrize("sub_path, message", [
    ("../etc", "unable to provision SubPath `../etc`: must not contain '..'"),
    ("a/../../b", "unable to provision SubPath `a/../../b`: must not contain '..'"),
    ("/etc", "error SubPath `/etc` must not be an absolute path"),
])
async def test_bad_sub_path(manager: VolumeManager, sub_path: str, message: str) -> None:
    pod = make_pod([{"name": "scratch", "emptyDir": {}}],
                   [{"name": "scratch", "mountPath": "/a", "subPath": sub_path}])
    with pytest.raises(VolumeError) as info:
        await manager.setup(pod)
    assert str(info.value) == message
    assert info.value.reason == REASON_CREATE_CONTAINER_CONFIG_ERROR


async def test_sub_path_symlink_cannot_escape(tmp_path: Path, manager: VolumeManager) -> None:
    pod = make_pod([{"name": "scratch", "emptyDir": {}}], [])
    await manager.setup(pod)
    outside = tmp_path / "outside"
    outside.mkdir()
    (vdir(manager, PLUGIN_EMPTY_DIR, "scratch") / "link").symlink_to(outside)
    pod["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "scratch", "mountPath": "/a", "subPath": "link/inner"}]
    with pytest.raises(VolumeError, match="not within volume path"):
        await manager.setup(pod)
    assert not (outside / "inner").exists()


async def test_unknown_volume_name(manager: VolumeManager) -> None:
    pod = make_pod([], [{"name": "ghost", "mountPath": "/g"}])
    with pytest.raises(VolumeError) as info:
        await manager.setup(pod)
    assert str(info.value) == 'cannot find volume "ghost" to mount into container "main"'
    assert info.value.reason == REASON_CREATE_CONTAINER_CONFIG_ERROR


async def test_bad_names_never_escape_root(manager: VolumeManager) -> None:
    pod = make_pod([{"name": "../../x", "emptyDir": {}}], [])
    with pytest.raises(VolumeError):
        await manager.setup(pod)
    pod = make_pod([], [])
    pod["metadata"]["uid"] = ".."
    with pytest.raises(VolumeError):
        await manager.setup(pod)


# ------------------------------------------------------------------ cleanup

async def test_cleanup_and_orphans(tmp_path: Path, manager: VolumeManager) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "keep").write_text("host data")
    pod = make_pod([{"name": "scratch", "emptyDir": {}},
                    {"name": "cfg", "configMap": {"name": "app"}},
                    {"name": "h", "hostPath": {"path": str(host), "type": "Directory"}}],
                   [{"name": "h", "mountPath": "/h"}])
    await manager.setup(pod)
    # a link inside the pod's tree pointing at host data must be removed, not followed
    (vdir(manager, PLUGIN_EMPTY_DIR, "scratch") / "escape").symlink_to(host)
    (manager.root / "other-uid").mkdir()
    (manager.root / "stray-link").symlink_to(host)
    assert await manager.pod_uids_on_disk() == {UID, "other-uid"}

    await manager.cleanup(UID)
    assert not (manager.root / UID).exists()
    assert (host / "keep").read_text() == "host data"
    assert await manager.pod_uids_on_disk() == {"other-uid"}
    await manager.cleanup(UID)    # idempotent
    with pytest.raises(VolumeError):
        await manager.cleanup("../x")


async def test_pod_uids_on_disk_without_root(tmp_path: Path, lookup: DictLookup) -> None:
    assert await VolumeManager(tmp_path / "none", lookup).pod_uids_on_disk() == set()


async def test_sub_path_expr_is_refused(manager: VolumeManager) -> None:
    pod = make_pod([{"name": "scratch", "emptyDir": {}}],
                   [{"name": "scratch", "mountPath": "/a", "subPathExpr": "$(POD_NAME)"}])
    with pytest.raises(VolumeError, match="subPathExpr is not supported"):
        await manager.setup(pod)

"""``corral image build-base``: the rootfs layout (pure, no Docker), the CLI's error paths, and
containers really run from the image (privileged: needs the Docker engine)."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nodeagent import images

ROOT = Path(__file__).resolve().parents[2]
HOST_BUSYBOX = Path("/bin/busybox")


def _members(tar_bytes: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return {m.name: m for m in tar.getmembers()}


def _elf64(machine: int, phdr_types: list[int]) -> bytes:
    """A minimal little-endian ELF64 header followed by program headers of the given types."""
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<HH", header, 16, 2, machine)
    struct.pack_into("<Q", header, 32, 64)  # e_phoff
    struct.pack_into("<HH", header, 54, 56, len(phdr_types))  # e_phentsize, e_phnum
    return bytes(header) + b"".join(struct.pack("<I", t) + bytes(52) for t in phdr_types)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controlplane.cli", "image", "build-base", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def _host_busybox_or_skip(require: Callable[[str], None]) -> None:
    try:
        images.inspect_busybox(HOST_BUSYBOX)
    except images.BaseImageError:
        require("busybox-static (/bin/busybox)")


# -- pure: layout, determinism, ELF check ------------------------------------------------------

def test_rootfs_layout() -> None:
    layer = images.rootfs_tar(b"BUSYBOX", ["httpd", "wget", "id", "busybox", "["])
    m = _members(layer)
    assert list(m) == sorted(m), "entries are sorted"
    assert m["bin/busybox"].isreg() and m["bin/busybox"].mode == 0o755
    assert m["bin/busybox"].size == len(b"BUSYBOX")
    for applet in ("httpd", "wget", "id", "[", "sh"):  # sh even when not listed
        assert m[f"bin/{applet}"].issym() and m[f"bin/{applet}"].linkname == "busybox"
    assert m["tmp"].isdir() and m["tmp"].mode == 0o1777
    assert m["root"].isdir() and m["root"].mode == 0o700
    assert m["var/www"].isdir()
    assert m["usr/bin"].linkname == "../bin" and m["sbin"].linkname == "bin"
    assert all(i.mtime == images.EPOCH and i.uid == 0 and i.gid == 0 for i in m.values())
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        passwd = tar.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
        group = tar.extractfile("etc/group").read().decode()  # type: ignore[union-attr]
    assert passwd.startswith("root:x:0:0:") and "\nnobody:x:65534:65534:" in passwd
    assert group.startswith("root:x:0:") and "nobody:x:65534:" in group


def test_same_busybox_same_image_id() -> None:
    a = images.rootfs_tar(b"X", ["ls", "cat"])
    b = images.rootfs_tar(b"X", ["cat", "ls"])
    assert a == b
    config = images.image_config(a, "1.35.0", "amd64")
    assert config == images.image_config(b, "1.35.0", "amd64")
    assert images.image_id(config) != images.image_id(images.image_config(a, "1.36.1", "amd64"))
    parsed = json.loads(config)
    assert parsed["config"]["Labels"] == {"corral.dev/base": "busybox-1.35.0"}
    assert parsed["config"]["Cmd"] == ["sh"] and parsed["config"]["Env"] == ["PATH=/bin"]
    archive = _members(images.image_archive(a, config, "corral/base:latest"))
    assert "manifest.json" in archive


def test_elf_static_check() -> None:
    assert images.elf_static_arch(_elf64(62, [1, 1])) == (True, "amd64")
    assert images.elf_static_arch(_elf64(183, [6, images.PT_INTERP, 1])) == (False, "arm64")
    with pytest.raises(ValueError):
        images.elf_static_arch(b"#!/bin/sh\necho not elf\n" + bytes(64))


# -- CLI error paths (no Docker needed) --------------------------------------------------------

def test_cli_missing_busybox(tmp_path: Path) -> None:
    result = _cli("--busybox", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "install busybox-static" in result.stderr


def test_cli_dynamic_binary_refused(tmp_path: Path) -> None:
    fake = tmp_path / "busybox"
    fake.write_bytes(_elf64(62, [images.PT_INTERP]))
    result = _cli("--busybox", str(fake))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "not statically linked" in result.stderr


def test_cli_docker_unreachable(tmp_path: Path, require: Callable[[str], None]) -> None:
    _host_busybox_or_skip(require)
    result = _cli(env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "Docker engine" in result.stderr


# -- the image, for real -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def docker_client(require: Callable[[str], None]) -> Iterator[object]:
    _host_busybox_or_skip(require)
    try:
        client = images.docker_client()
    except images.BaseImageError:
        require("the Docker engine")
    yield client
    client.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def base_tag(docker_client: object) -> Iterator[str]:
    import docker.errors

    tag = f"corral-test/base:{uuid.uuid4().hex[:12]}"
    try:
        yield tag
    finally:
        for container in docker_client.containers.list(  # type: ignore[attr-defined]
                all=True, filters={"ancestor": tag}):
            container.remove(force=True)
        try:
            docker_client.images.remove(tag)  # type: ignore[attr-defined]
        except docker.errors.ImageNotFound:
            pass


def _run(client: object, tag: str, command: list[str]) -> tuple[int, str]:
    """Run ``command`` in a fresh container without network (loopback only); remove it."""
    container = client.containers.run(tag, command, detach=True,  # type: ignore[attr-defined]
                                      network_mode="none", labels={"corral.dev/test": "images"})
    try:
        status = container.wait(timeout=20)
        return status["StatusCode"], container.logs().decode()
    finally:
        container.remove(force=True)


@pytest.mark.privileged
def test_build_base_image_and_run(docker_client: object, base_tag: str) -> None:
    ident = images.build_base_image(docker_client, base_tag, HOST_BUSYBOX)  # type: ignore[arg-type]
    assert images.build_base_image(docker_client, base_tag, HOST_BUSYBOX) == ident  # type: ignore[arg-type]
    image = docker_client.images.get(base_tag)  # type: ignore[attr-defined]
    assert image.id == ident and base_tag in image.tags
    assert image.labels["corral.dev/base"].startswith("busybox-")

    assert _run(docker_client, base_tag, ["busybox", "echo", "hello"]) == (0, "hello\n")
    code, out = _run(docker_client, base_tag, ["sh", "-c", "id -u; ls -a /tmp; touch /tmp/x"])
    assert code == 0 and out.split()[0] == "0"

    script = ("echo corral-base-ok > /var/www/index.html; "
              "httpd -f -p 127.0.0.1:8080 -h /var/www & "
              "for i in $(seq 50); do wget -qO- http://127.0.0.1:8080/ 2>/dev/null && exit 0; sleep 0.1; done; "
              "exit 1")
    code, out = _run(docker_client, base_tag, ["sh", "-c", script])
    assert (code, out) == (0, "corral-base-ok\n")


@pytest.mark.privileged
def test_cli_builds_and_prints_tag_and_id(docker_client: object, base_tag: str) -> None:
    result = _cli("--tag", base_tag)
    assert result.returncode == 0, result.stderr
    tag, ident = result.stdout.split()
    assert tag == base_tag
    assert docker_client.images.get(base_tag).id == ident  # type: ignore[attr-defined]

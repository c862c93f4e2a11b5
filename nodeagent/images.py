"""The local base image: ``corral image build-base``.

A cluster without a registry still needs something to run. This module turns the host's static
busybox (Debian's busybox-static: ``/bin/busybox``) into a small image, ``corral/base:latest``,
in the order the code appears:

1. ``inspect_busybox`` checks the binary is a static ELF (no program interpreter) and reads its
   architecture from the ELF header, then runs it for its version and applet list.
2. ``rootfs_tar`` lays out the root filesystem as one deterministic tar layer: /bin/busybox, a
   symlink per applet, /etc/passwd and /etc/group (root, nobody), /etc/hosts, /tmp (1777),
   /root, /var/www (for httpd examples); sorted entries, fixed owner and mtime.
3. ``image_archive`` wraps the layer as a ``docker save``-format archive whose config (Cmd, Env,
   WorkingDir, the ``corral.dev/base`` label, a fixed creation time) is ours, so the same busybox
   gives the same image id: the id is the config's sha256.
4. ``build_base_image`` loads it into Docker under the tag (re-pointing the tag if it existed) and
   ``main`` is the CLI. Every expected failure is a ``BaseImageError``: one line, exit code 2.

Steps 1 (apart from running busybox) to 3 are pure and need no Docker.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import docker

DEFAULT_TAG = "corral/base:latest"
DEFAULT_BUSYBOX = Path("/bin/busybox")
LABEL = "corral.dev/base"
#: Fixed mtime of every tar entry and the image's creation time (reproducible builds).
EPOCH = 0
CREATED = "1970-01-01T00:00:00Z"
IMAGE_ENV = ["PATH=/bin"]
IMAGE_CMD = ["sh"]
IMAGE_WORKDIR = "/"
INSTALL_HINT = "install busybox-static (apt-get install busybox-static)"

#: ELF e_machine -> Docker/OCI architecture.
ELF_MACHINES = {3: "386", 40: "arm", 62: "amd64", 183: "arm64", 243: "riscv64", 21: "ppc64le",
                22: "s390x"}
PT_INTERP = 3

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnobody:x:65534:\n"
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
#: directory -> mode
DIRS = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "proc": 0o755, "root": 0o700, "sys": 0o755,
        "tmp": 0o1777, "usr": 0o755, "var": 0o755, "var/www": 0o755}
#: merged-/usr symlinks, so /usr/bin/env and /sbin/ip resolve too.
SYMLINKS = {"sbin": "bin", "usr/bin": "../bin", "usr/sbin": "../bin"}
_APPLET = re.compile(r"^[A-Za-z0-9_.\[\]+-]+$")


class BaseImageError(Exception):
    """An expected failure of building the base image; its message is one line for the user."""


@dataclass(frozen=True)
class Busybox:
    path: Path
    version: str
    arch: str
    applets: tuple[str, ...]


# -- 1. the binary -----------------------------------------------------------------------------

def elf_static_arch(data: bytes) -> tuple[bool, str | None]:
    """(is static, Docker arch or None) of an ELF image; raises ``ValueError`` if not ELF."""
    if len(data) < 52 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        raise ValueError("not an ELF executable")
    bits64, order = data[4] == 2, "little" if data[5] == 1 else "big"

    def num(offset: int, size: int) -> int:
        if offset + size > len(data):
            raise ValueError("truncated ELF header")
        return int.from_bytes(data[offset:offset + size], order)

    machine = num(18, 2)
    if bits64:
        phoff, phentsize, phnum = num(32, 8), num(54, 2), num(56, 2)
    else:
        phoff, phentsize, phnum = num(28, 4), num(42, 2), num(44, 2)
    static = all(num(phoff + i * phentsize, 4) != PT_INTERP for i in range(phnum))
    return static, ELF_MACHINES.get(machine)


def inspect_busybox(path: Path) -> Busybox:
    """Check ``path`` is a static busybox and ask it for its version and applets."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BaseImageError(f"{path}: not found; {INSTALL_HINT}") from None
    except OSError as e:
        raise BaseImageError(f"{path}: cannot read: {e.strerror}") from None
    try:
        static, arch = elf_static_arch(data)
    except ValueError as e:
        raise BaseImageError(f"{path}: {e}; {INSTALL_HINT}") from None
    if not static:
        raise BaseImageError(f"{path}: not statically linked; {INSTALL_HINT}")
    if arch is None:
        raise BaseImageError(f"{path}: unsupported ELF architecture")
    try:
        listing = subprocess.run([str(path), "--list"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout
        banner = subprocess.run([str(path)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        raise BaseImageError(f"{path}: cannot run it for its applet list: {e}") from None
    match = re.search(r"BusyBox v(\S+)", banner.stdout + banner.stderr)
    applets = tuple(sorted({a for a in listing.split() if _APPLET.match(a) and a != "busybox"}))
    if "sh" not in applets:
        raise BaseImageError(f"{path}: this busybox has no sh applet")
    return Busybox(path, match.group(1) if match else "unknown", arch, applets)


# -- 2. the root filesystem --------------------------------------------------------------------

def _entry(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "root", "root"
    return info


def rootfs_tar(busybox: bytes, applets: tuple[str, ...] | list[str]) -> bytes:
    """The root filesystem as an uncompressed tar: deterministic for the same inputs."""
    files = {"bin/busybox": (busybox, 0o755), "etc/passwd": (PASSWD.encode(), 0o644),
             "etc/group": (GROUP.encode(), 0o644), "etc/hosts": (HOSTS.encode(), 0o644)}
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = []
    entries += [(_entry(d, tarfile.DIRTYPE, mode), None) for d, mode in DIRS.items()]
    entries += [(_entry(n, tarfile.REGTYPE, mode, len(b)), b) for n, (b, mode) in files.items()]
    links = dict(SYMLINKS)
    links.update({f"bin/{a}": "busybox" for a in set(applets) | {"sh"} if a != "busybox"})
    entries += [(_entry(n, tarfile.SYMTYPE, 0o777, link=t), None) for n, t in links.items()]
    entries.sort(key=lambda e: e[0].name)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, body in entries:
            tar.addfile(info, io.BytesIO(body) if body is not None else None)
    return out.getvalue()


# -- 3. the image archive ----------------------------------------------------------------------

def image_config(layer: bytes, version: str, arch: str) -> bytes:
    """The image config JSON (canonical bytes: the image id is their sha256)."""
    config = {
        "architecture": arch,
        "os": "linux",
        "created": CREATED,
        "config": {"Cmd": IMAGE_CMD, "Env": IMAGE_ENV, "WorkingDir": IMAGE_WORKDIR,
                   "Labels": {LABEL: f"busybox-{version}"}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        "history": [{"created": CREATED, "created_by": f"corral image build-base (busybox {version})"}],
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def image_archive(layer: bytes, config: bytes, tag: str) -> bytes:
    """A ``docker save``-format tar holding one layer, the config and the tag."""
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = hashlib.sha256(layer).hexdigest() + "/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}])
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, body in ((config_name, config), (layer_name, layer),
                           ("manifest.json", manifest.encode())):
            if "/" in name:
                tar.addfile(_entry(name.split("/")[0], tarfile.DIRTYPE, 0o755))
            tar.addfile(_entry(name, tarfile.REGTYPE, 0o644, len(body)), io.BytesIO(body))
    return out.getvalue()


def image_id(config: bytes) -> str:
    return "sha256:" + hashlib.sha256(config).hexdigest()


# -- 4. Docker and the CLI ---------------------------------------------------------------------

def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def build_base_image(client: docker.DockerClient, tag: str = DEFAULT_TAG,
                     busybox: Path = DEFAULT_BUSYBOX) -> str:
    """Build the base image from ``busybox`` into ``client`` as ``tag``; return its image id.

    Idempotent: the same busybox gives the same id; a rebuild re-points the tag, and an image
    the tag used to name is removed if nothing else uses it."""
    import docker.errors

    box = inspect_busybox(busybox)
    layer = rootfs_tar(box.path.read_bytes(), box.applets)
    config = image_config(layer, box.version, box.arch)
    want = image_id(config)
    try:
        try:
            previous: str | None = client.images.get(tag).id
        except docker.errors.ImageNotFound:
            previous = None
        client.images.load(image_archive(layer, config, tag))
        got = client.images.get(tag).id
    except docker.errors.DockerException as e:
        raise BaseImageError(f"docker: {_one_line(e)}") from None
    if got != want:
        raise BaseImageError(f"docker loaded {got} as {tag}, expected {want}")
    if previous and previous != got:
        try:
            client.images.remove(previous)
        except docker.errors.DockerException:
            pass  # still tagged elsewhere or used by a container: leave it
    return got


def docker_client(max_pool_size: int = 10) -> docker.DockerClient:
    """A client from the environment (DOCKER_HOST, ...), or ``BaseImageError`` if none answers.
    ``max_pool_size``: connections kept open (one per thread calling the engine at once)."""
    try:
        import docker
    except ImportError:
        raise BaseImageError("the docker Python package is missing: pip install 'docker>=7'") from None
    try:
        client = docker.from_env(timeout=30, max_pool_size=max_pool_size)
        client.ping()
    except docker.errors.DockerException as e:
        raise BaseImageError(f"cannot reach the Docker engine: {_one_line(e)}") from None
    return client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="corral image build-base",
        description="Build a small local base image from the host's static busybox.")
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"image tag (default {DEFAULT_TAG})")
    parser.add_argument("--busybox", type=Path, default=DEFAULT_BUSYBOX,
                        help=f"static busybox binary (default {DEFAULT_BUSYBOX})")
    args = parser.parse_args(argv)
    try:
        inspect_busybox(args.busybox)  # fail on the binary before asking for Docker
        client = docker_client()
        try:
            ident = build_base_image(client, args.tag, args.busybox)
        finally:
            client.close()
    except BaseImageError as e:
        sys.stderr.write(f"corral image build-base: {e}\n")
        return 2
    sys.stdout.write(f"{args.tag} {ident}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

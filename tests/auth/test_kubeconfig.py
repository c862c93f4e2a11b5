"""The kubeconfig we write, read by us, by the kubernetes Python client and by real kubectl.

Flow: the file itself (mode, atomic replace, layout) and ``load_kubeconfig`` with inline data,
file paths, another context and a table of broken files; then the real clients: the kubernetes
client's ``load_kube_config`` and ``kubectl config view`` (1.31 and 1.32) parse it, and both,
plus our own ``KubeConfig.ssl_context``, make authenticated requests to the test API server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import kubernetes
import pytest
import yaml

from controlplane.auth.kubeconfig import KubeConfig, KubeConfigError, load_kubeconfig, write_kubeconfig
from controlplane.auth.pki import ClusterPKI

if TYPE_CHECKING:
    from conftest import Api

SERVER = "https://127.0.0.1:6443"


def write_admin(path: Path, pki: ClusterPKI, server: str = SERVER) -> None:
    write_kubeconfig(path, server=server, ca_pem=pki.ca_pem, cert_pem=pki.admin_cert_pem,
                     key_pem=pki.admin_key_pem)


def test_written_0600_whole_and_self_contained(pki: ClusterPKI, tmp_path: Path) -> None:
    path = tmp_path / "home" / ".kube" / "config"
    write_admin(path, pki)
    write_admin(path, pki, "https://10.0.0.1:6443")  # replaces the file whole
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["config"]
    doc = yaml.safe_load(path.read_text())
    assert doc == {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "corral", "cluster": {
            "server": "https://10.0.0.1:6443",
            "certificate-authority-data": base64.b64encode(pki.ca_pem).decode()}}],
        "users": [{"name": "admin", "user": {
            "client-certificate-data": base64.b64encode(pki.admin_cert_pem).decode(),
            "client-key-data": base64.b64encode(pki.admin_key_pem).decode()}}],
        "contexts": [{"name": "corral", "context": {"cluster": "corral", "user": "admin"}}],
        "current-context": "corral",
        "preferences": {},
    }


def test_load_round_trip(pki: ClusterPKI, tmp_path: Path) -> None:
    write_admin(tmp_path / "kc", pki)
    assert load_kubeconfig(tmp_path / "kc") == KubeConfig(
        SERVER, pki.ca_pem, pki.admin_cert_pem, pki.admin_key_pem)


def test_load_file_paths_relative_to_the_kubeconfig(pki: ClusterPKI, tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_bytes(pki.ca_pem)
    (tmp_path / "certs" / "n1.crt").write_bytes(b"CERT")
    (tmp_path / "n1.key").write_bytes(b"KEY")
    (tmp_path / "kc").write_text(yaml.safe_dump({
        "clusters": [{"name": "c", "cluster": {"server": SERVER,
                                               "certificate-authority": "certs/ca.crt"}}],
        "users": [{"name": "u", "user": {"client-certificate": "certs/n1.crt",
                                         "client-key": str(tmp_path / "n1.key")}}],
        "contexts": [{"name": "other", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "missing",
    }))
    assert load_kubeconfig(tmp_path / "kc", context="other") == KubeConfig(
        SERVER, pki.ca_pem, b"CERT", b"KEY")


GOOD = {
    "clusters": [{"name": "c", "cluster": {"server": SERVER, "certificate-authority-data": "Q0E="}}],
    "users": [{"name": "u", "user": {"client-certificate-data": "Q0VSVA==",
                                     "client-key-data": "S0VZ"}}],
    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "x",
}


def changed(**top: object) -> str:
    return yaml.safe_dump({**GOOD, **top})


BROKEN = [
    ("not-yaml", "a: [b", "is not YAML"),
    ("not-a-mapping", "- a\n- b\n", "is not a mapping"),
    ("no-current-context", changed(**{"current-context": ""}), "no current-context"),
    ("unknown-context", changed(**{"current-context": "y"}), "no context named 'y'"),
    ("unknown-user", changed(contexts=[{"name": "x", "context": {"cluster": "c", "user": "v"}}]),
     "no user named 'v'"),
    ("no-server", changed(clusters=[{"name": "c", "cluster": {"certificate-authority-data": "Q0E="}}]),
     "cluster 'c' has no server"),
    ("bad-base64", changed(users=[{"name": "u", "user": {"client-certificate-data": "!!",
                                                          "client-key-data": "S0VZ"}}]),
     "user 'u': client-certificate-data is not base64"),
    ("no-key", changed(users=[{"name": "u", "user": {"client-certificate-data": "Q0VSVA=="}}]),
     "user 'u': neither client-key-data nor client-key is set"),
    ("missing-ca-file", changed(clusters=[{"name": "c", "cluster": {
        "server": SERVER, "certificate-authority": "nope.crt"}}]),
     "cluster 'c': cannot read certificate-authority nope.crt"),
]


@pytest.mark.parametrize("content,says", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_load_errors_name_file_and_entry(tmp_path: Path, content: str, says: str) -> None:
    (tmp_path / "kc").write_text(content)
    with pytest.raises(KubeConfigError) as raised:
        load_kubeconfig(tmp_path / "kc")
    assert str(tmp_path / "kc") in str(raised.value)
    assert says in str(raised.value)


def test_load_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="cannot read kubeconfig"):
        load_kubeconfig(tmp_path / "nope")


# -- real clients ------------------------------------------------------------------------------


def test_kubernetes_client_loads_it(pki: ClusterPKI, tmp_path: Path) -> None:
    write_admin(tmp_path / "kc", pki)
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(tmp_path / "kc"), client_configuration=cfg)
    assert cfg.host == SERVER
    assert cfg.verify_ssl
    files = (cfg.ssl_ca_cert, cfg.cert_file, cfg.key_file)
    assert [Path(f).read_bytes() if f else None for f in files] == [
        pki.ca_pem, pki.admin_cert_pem, pki.admin_key_pem]


async def run_kubectl(kubectl: str, home: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        kubectl, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"HOME": str(home), "PATH": os.environ.get("PATH", "")})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_kubectl_config_view_parses_it(kubectl: str, pki: ClusterPKI, tmp_path: Path) -> None:
    write_admin(tmp_path / "kc", pki)
    view = json.loads(await run_kubectl(kubectl, tmp_path, "config", "view", "--raw", "-o",
                                        "json", "--kubeconfig", str(tmp_path / "kc")))
    assert view["current-context"] == "corral"
    cluster = view["clusters"][0]["cluster"]
    assert cluster["server"] == SERVER
    assert base64.b64decode(cluster["certificate-authority-data"]) == pki.ca_pem
    user = view["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == pki.admin_cert_pem
    assert base64.b64decode(user["client-key-data"]) == pki.admin_key_pem


async def test_kubectl_authenticates_as_admin(kubectl: str, api: Api, tmp_path: Path) -> None:
    write_admin(tmp_path / "kc", api.pki, api.url)
    out = await run_kubectl(kubectl, tmp_path, "--kubeconfig", str(tmp_path / "kc"),
                            "get", "--raw", "/whoami")
    assert json.loads(out)["name"] == "corral-admin"


async def test_kubernetes_client_authenticates(api: Api, tmp_path: Path) -> None:
    write_admin(tmp_path / "kc", api.pki, api.url)

    def version() -> str:
        cfg = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(tmp_path / "kc"),
                                           client_configuration=cfg)
        with kubernetes.client.ApiClient(cfg) as client:
            return str(kubernetes.client.VersionApi(client).get_code().git_version)

    assert await asyncio.to_thread(version) == "v1.31.0"
    assert api.paths == ["/version/"]


async def test_our_own_tools_authenticate(api: Api, tmp_path: Path) -> None:
    write_admin(tmp_path / "kc", api.pki, api.url)
    config = load_kubeconfig(tmp_path / "kc")
    async with aiohttp.ClientSession() as session:
        async with session.get(config.server + "/whoami", ssl=config.ssl_context()) as resp:
            assert (await resp.json())["name"] == "corral-admin"

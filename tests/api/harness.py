"""What the API tests share: a client of the in-process server, and the real kubectl."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

import aiohttp

from controlplane.api.server import ApiServer
from controlplane.auth.pki import ClusterPKI

KUBECTL = "/usr/bin/kubectl"


@dataclass
class Api:
    """An in-process API server and an admin session to it."""

    server: ApiServer
    url: str
    session: aiohttp.ClientSession
    pki: ClusterPKI

    async def call(self, method: str, path: str, body: Any = None, *,
                   content_type: str = "application/json", raw: bytes | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        """(status, decoded JSON body or text, response headers)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        hdrs = {"Content-Type": content_type, **(headers or {})} if data is not None else (
            headers or {})
        async with self.session.request(method, self.url + path, data=data,
                                        headers=hdrs) as answer:
            text = await answer.text()
            try:
                decoded: Any = json.loads(text)
            except json.JSONDecodeError:
                decoded = text
            return answer.status, decoded, answer.headers


@dataclass
class Kubectl:
    """The real kubectl against one controller of a control plane."""

    kubeconfig: str
    cache_dir: str

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [KUBECTL, "--kubeconfig", self.kubeconfig, "--cache-dir", self.cache_dir, *args],
            input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)

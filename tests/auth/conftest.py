"""Fixtures for the auth tests: a fresh cluster PKI and a tiny HTTPS API over loopback.

The ``api`` server is what the real API server does at its front door, and nothing more: the
PKI's server TLS context, ``authenticate`` on every request except the two join endpoints
(401 Status when it finds nobody), ``GET /whoami`` answering the user, ``GET /version`` as
kubectl and the kubernetes client call it, and the join routes. It records every request path,
so a test can show that a request never reached it.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from controlplane.api.errors import unauthorized
from controlplane.auth import join
from controlplane.auth.authn import TokenAuthenticator, User, authenticate
from controlplane.auth.pki import ClusterPKI

#: kubectl binaries of the versions Corral promises to work with (offline use needs no dispatcher).
KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")
KUBECTL_VERSIONS = ("1.31", "1.32")
SCRIPT_TOKEN = "script-token-0123456789"
SCRIPT_USER = User("script", ("ops", "system:authenticated"))
USER_KEY = web.RequestKey("user", User)


@pytest.fixture(params=KUBECTL_VERSIONS)
def kubectl(request: pytest.FixtureRequest, require: Callable[[str], None]) -> str:
    """A kubectl binary, once per promised version; a missing one skips (fails in CI)."""
    path = KUBECTL_DIR / f"kubectl.{request.param}"
    if path.exists():
        return str(path)
    found = shutil.which(f"kubectl.{request.param}")
    if found is None:
        require(f"kubectl {request.param}")
    return found


@dataclass
class Api:
    url: str
    pki: ClusterPKI
    #: Every request path the server saw, in order.
    paths: list[str] = field(default_factory=list)
    #: The one static bearer token the server knows, and its user.
    script_token: str = SCRIPT_TOKEN
    script_user: User = SCRIPT_USER


StartApi = Callable[[ClusterPKI], Awaitable[Api]]


@pytest.fixture
async def start_api() -> AsyncIterator[StartApi]:
    """Start the test API server for a PKI (several may run at once); stopped at teardown."""
    runners: list[web.AppRunner] = []
    tokens = TokenAuthenticator({SCRIPT_TOKEN: SCRIPT_USER})

    async def start(pki: ClusterPKI) -> Api:
        api = Api("", pki)
        public = {join.JOIN_PATH, join.CA_PATH}

        @web.middleware
        async def front_door(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            api.paths.append(request.path)
            if request.path in public:
                return await handler(request)
            assert request.transport is not None
            user = authenticate(request.transport.get_extra_info("peercert"),
                                request.headers.get("Authorization"), tokens)
            if user is None:
                err = unauthorized()
                return web.json_response(err.status(), status=err.code)
            request[USER_KEY] = user
            return await handler(request)

        async def whoami(request: web.Request) -> web.Response:
            user = request[USER_KEY]
            return web.json_response({"name": user.name, "groups": list(user.groups)})

        async def version(request: web.Request) -> web.Response:
            # The kubernetes client (v37) refuses a VersionInfo missing any of these fields.
            return web.json_response({
                "major": "1", "minor": "31", "gitVersion": "v1.31.0", "gitCommit": "corral",
                "gitTreeState": "clean", "buildDate": "2030-01-01T00:00:00Z",
                "goVersion": "python", "compiler": "cpython", "platform": "linux/amd64"})

        app = web.Application(middlewares=[front_door])
        app.router.add_get("/whoami", whoami)
        app.router.add_get("/version", version)
        app.router.add_get("/version/", version)
        app.router.add_get(join.CA_PATH, join.ca_handler(pki))
        app.router.add_post(join.JOIN_PATH, join.join_handler(pki))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        cert, key = pki.issue_server_cert("apiserver", ["corral.test"])
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_ssl_context(cert, key))
        await site.start()
        port = runner.addresses[0][1]
        api.url = f"https://127.0.0.1:{port}"
        return api

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def api(pki: ClusterPKI, start_api: StartApi) -> Api:
    return await start_api(pki)

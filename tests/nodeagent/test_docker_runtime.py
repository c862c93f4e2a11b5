"""DockerRuntime on the real engine (privileged): the lifecycle contract the fake keeps, real
exits and their reasons, stop's SIGTERM-then-SIGKILL, a pod's shared network namespace,
adoption by a fresh runtime, limits and the container config, image errors, and the MiniAgent
loop of test_fake_runtime driving a pod for real.

Everything runs from a base image built under a unique tag; every sandbox and container carries
this run's ``corral.dev/test`` label, and the module's teardown removes all of them and the
image, whatever failed. No traffic leaves the test's own containers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from runtimekit import (
    MiniAgent,
    base_image,
    exited,
    lifecycle_contract,
    make_pod,
    state,
    statuses,
    wait_for,
)

from nodeagent.runtime.base import (
    STDERR,
    STDOUT,
    ContainerConfig,
    ContainerState,
    CreateContainerError,
    ExecSession,
    ImagePullError,
    LogOptions,
    Mount,
    NotFound,
    RuntimeFailure,
    SandboxConfig,
    SandboxState,
)
from nodeagent.runtime.docker import Demuxer, DockerRuntime, exit_reason, parse_time

RUN = uuid.uuid4().hex[:12]
TEST_LABEL = "corral.dev/test"


# -- pure --------------------------------------------------------------------------------------

def test_parse_time_and_exit_reason() -> None:
    assert parse_time("0001-01-01T00:00:00Z") is None and parse_time("") is None
    assert parse_time("2024-01-02T03:04:05.123456789Z") == pytest.approx(1704164645.123456789)
    assert parse_time("2024-01-02T03:04:05Z") == 1704164645.0
    assert parse_time("2024-01-02T04:04:05.5+01:00") == 1704164645.5
    assert exit_reason({"ExitCode": 0}) == "Completed"
    assert exit_reason({"ExitCode": 3}) == "Error"
    assert exit_reason({"ExitCode": 137, "OOMKilled": True}) == "OOMKilled"


@pytest.mark.parametrize("chunks, frames, pending", [
    ([b"\x01\0\0\0\0\0\0\x02hi"], [(STDOUT, b"hi")], 0),
    ([b"\x02\0\0\0\0\0\0\x03er", b"r\x01\0\0"], [(STDERR, b"err")], 3),
    ([b"\x01\0\0\0\0\0\0\x01a\x00\0\0\0\0\0\0\x01b"], [(STDOUT, b"a"), (STDOUT, b"b")],
     0),
    ([b"\x01\0\0\0", b"\0\0\0\0"], [(STDOUT, b"")], 0),
])
def test_demuxer(chunks: list[bytes], frames: list[tuple[int, bytes]], pending: int) -> None:
    demuxer = Demuxer()
    assert [f for chunk in chunks for f in demuxer.feed(chunk)] == frames
    assert demuxer.pending == pending


def test_demuxer_refuses_unknown_streams() -> None:
    with pytest.raises(RuntimeFailure, match="unknown stream 9"):
        Demuxer().feed(b"\x09\0\0\0\0\0\0\0")


# -- the engine --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image(docker_client: Any) -> Iterator[str]:
    with base_image(docker_client, f"corral-test/runtime:{RUN}", {TEST_LABEL: RUN}) as tag:
        yield tag


@pytest.fixture
def rt(docker_client: Any, image: str) -> DockerRuntime:
    return DockerRuntime(docker_client, sandbox_image=image)


@pytest.fixture
def labels() -> dict[str, str]:
    """This run's label (teardown) and this test's (listing sees only its own objects)."""
    return {TEST_LABEL: RUN, "corral.dev/case": uuid.uuid4().hex[:12]}


def ctr(name: str, image: str, labels: dict[str, str], *command: str, **kw: Any
        ) -> ContainerConfig:
    return ContainerConfig(name, image, command=command, labels=labels, **kw)




def logs(docker_client: Any, cid: str) -> str:
    return docker_client.api.logs(cid).decode()


@pytest.mark.privileged
async def test_lifecycle_contract(rt: DockerRuntime, image: str, labels: dict[str, str]) -> None:
    await lifecycle_contract(rt, image, labels)


@pytest.mark.privileged
async def test_running_container_with_ip_and_exits(rt: DockerRuntime, image: str, docker_client: Any,
                                                   labels: dict[str, str]) -> None:
    sid = await rt.run_sandbox(SandboxConfig("u1", "ns", "p", "web-0", labels=labels))
    [box] = await rt.list_sandboxes(labels)
    assert box.state is SandboxState.READY and box.ip and box.pod_uid == "u1"
    assert docker_client.api.inspect_container(sid)["Config"]["Hostname"] == "web-0"

    up = await rt.create_container(sid, ctr("up", image, labels, "sh", "-c", "echo hi; sleep 30"))
    bad = await rt.create_container(sid, ctr("bad", image, labels, "sh", "-c", "exit 3"))
    ok = await rt.create_container(sid, ctr("ok", image, labels, "true"))
    for cid in (up, bad, ok):
        await rt.start_container(cid)
    c = await wait_for(rt, up, lambda c: "hi" in logs(docker_client, up))
    assert c.state is ContainerState.RUNNING and c.finished_at is None
    c = await wait_for(rt, bad, exited)
    assert (c.state, c.exit_code, c.reason) == (ContainerState.EXITED, 3, "Error")
    assert c.started_at and c.finished_at and abs(c.finished_at - time.time()) < 60
    c = await wait_for(rt, ok, exited)
    assert (c.exit_code, c.reason) == (0, "Completed")
    await rt.remove_sandbox(sid)  # removes its running container too
    assert await rt.list_containers(labels=labels) == []


@pytest.mark.privileged
async def test_stop_kills_after_the_timeout(rt: DockerRuntime, image: str, docker_client: Any,
                                            labels: dict[str, str]) -> None:
    sid = await rt.run_sandbox(SandboxConfig("u1", "ns", "p", "p", labels=labels))
    cid = await rt.create_container(sid, ctr(
        "stubborn", image, labels, "sh", "-c",
        "trap 'echo TERM' TERM; echo ready; while :; do sleep 0.2; done"))
    await rt.start_container(cid)
    await wait_for(rt, cid, lambda c: "ready" in logs(docker_client, cid))
    began = time.monotonic()
    await rt.stop_container(cid, timeout=1)
    took = time.monotonic() - began
    [c] = await rt.list_containers(sid)
    assert (c.state, c.exit_code, c.reason) == (ContainerState.EXITED, 137, "Error")
    assert 1 <= took < 5, took
    assert "TERM" in logs(docker_client, cid)  # it got SIGTERM first
    began = time.monotonic()
    await rt.stop_sandbox(sid)  # the pause process exits on SIGTERM at once
    assert time.monotonic() - began < 2
    assert (await rt.list_sandboxes(labels))[0].state is SandboxState.NOTREADY


@pytest.mark.privileged
async def test_containers_share_the_sandbox_network(rt: DockerRuntime, image: str,
                                                    docker_client: Any, labels: dict[str, str]) -> None:
    sid = await rt.run_sandbox(SandboxConfig("u1", "ns", "p", "p", labels=labels))
    server = await rt.create_container(sid, ctr(
        "server", image, labels, "sh", "-c",
        "echo pod-ok > /var/www/index.html; exec httpd -f -p 127.0.0.1:8080 -h /var/www"))
    fetch = await rt.create_container(sid, ctr(
        "fetch", image, labels, "sh", "-c",
        "for i in $(seq 50); do wget -qO- http://127.0.0.1:8080/ && exit 0; sleep 0.1; done;"
        " exit 1"))
    await rt.start_container(server)
    await rt.start_container(fetch)
    c = await wait_for(rt, fetch, exited)
    assert (c.exit_code, logs(docker_client, fetch)) == (0, "pod-ok\n")
    ipc = docker_client.api.inspect_container(fetch)["HostConfig"]
    assert ipc["IpcMode"] == ipc["NetworkMode"] == f"container:{sid}"


@pytest.mark.privileged
async def test_fresh_runtime_adopts_what_runs(rt: DockerRuntime, docker_client: Any, image: str,
                                              labels: dict[str, str]) -> None:
    sid = await rt.run_sandbox(SandboxConfig("u1", "ns", "p", "p", labels=labels))
    cid = await rt.create_container(sid, ctr("c", image, labels, "sleep", "30"))
    await rt.start_container(cid)
    boxes, ctrs = await rt.list_sandboxes(labels), await rt.list_containers(sid)
    again = DockerRuntime(docker_client, sandbox_image=image)
    assert await again.list_sandboxes(labels) == boxes
    assert await again.list_containers(sid) == ctrs
    [c] = ctrs
    assert (c.id, c.sandbox_id, c.state, c.labels[TEST_LABEL]) == (
        cid, sid, ContainerState.RUNNING, RUN)
    await again.remove_container(cid)
    with pytest.raises(NotFound):
        await rt.remove_container(cid)
    with pytest.raises(NotFound):
        await rt.stop_container(cid, timeout=0)


@pytest.mark.privileged
async def test_container_config_and_limits(rt: DockerRuntime, image: str, docker_client: Any,
                                           labels: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "f").write_text("from-host\n")
    sid = await rt.run_sandbox(SandboxConfig("u1", "ns", "p", "p", labels=labels))
    cid = await rt.create_container(sid, ctr(
        "c", image, labels, "sh", "-c",
        'echo "$V"; pwd; cat /data/f; touch /data/x 2>/dev/null || echo read-only',
        env=(("V", "hello"),), working_dir="/tmp",
        mounts=(Mount("/data", str(tmp_path), read_only=True),),
        cpu_limit=0.5, memory_limit=64 * 2**20))
    host = docker_client.api.inspect_container(cid)["HostConfig"]
    assert (host["NanoCpus"], host["Memory"]) == (500_000_000, 64 * 2**20)
    await rt.start_container(cid)
    c = await wait_for(rt, cid, exited)
    assert (c.exit_code, logs(docker_client, cid)) == (0, "hello\n/tmp\nfrom-host\nread-only\n")

    # args alone replace the image's CMD (this image has no ENTRYPOINT)
    args = await rt.create_container(sid, ContainerConfig("a", image, args=("echo", "only"),
                                                          labels=labels))
    await rt.start_container(args)
    assert (await wait_for(rt, args, exited)).exit_code == 0
    assert logs(docker_client, args) == "only\n"


@pytest.mark.privileged
async def test_image_and_create_errors(rt: DockerRuntime, image: str,
                                       labels: dict[str, str]) -> None:
    assert await rt.image_present(image)
    assert not await rt.image_present("corral.invalid/nothing:1")
    with pytest.raises(ImagePullError) as pulled:
        await rt.pull_image("corral.invalid/nothing:1")
    assert "corral.invalid/nothing:1" in str(pulled.value) and "\n" not in str(pulled.value)

    sid = await rt.run_sandbox(SandboxConfig("u1", "ns", "p", "p", labels=labels))
    with pytest.raises(CreateContainerError, match="corral.invalid"):
        await rt.create_container(sid, ctr("c", "corral.invalid/nothing:1", labels))
    cid = await rt.create_container(sid, ctr("c", image, labels, "/no/such/binary"))
    with pytest.raises(CreateContainerError, match="no such file or directory") as started:
        await rt.start_container(cid)
    assert "\n" not in str(started.value)
    with pytest.raises(NotFound):
        await rt.create_container("0" * 64, ctr("c", image, labels))


class Scoped:
    """The runtime as this test's MiniAgent sees it: it labels what it creates with the test's
    labels and lists only those, so its stray removal never touches anything else."""

    def __init__(self, rt: DockerRuntime, labels: dict[str, str]) -> None:
        self.rt, self.labels = rt, labels

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rt, name)

    async def run_sandbox(self, config: SandboxConfig) -> str:
        return await self.rt.run_sandbox(replace(config, labels={**config.labels, **self.labels}))

    async def create_container(self, sandbox_id: str, config: ContainerConfig) -> str:
        return await self.rt.create_container(
            sandbox_id, replace(config, labels={**config.labels, **self.labels}))

    async def list_sandboxes(self, labels: Mapping[str, str] | None = None) -> list[Any]:
        return await self.rt.list_sandboxes({**(labels or {}), **self.labels})

    async def list_containers(self, sandbox_id: str | None = None,
                              labels: Mapping[str, str] | None = None) -> list[Any]:
        return await self.rt.list_containers(sandbox_id, {**(labels or {}), **self.labels})


@pytest.mark.privileged
async def test_mini_agent_runs_a_pod_for_real(rt: DockerRuntime, image: str,
                                              labels: dict[str, str]) -> None:
    pod = make_pod(f"u-{labels['corral.dev/case']}", "Always", ["web"], inits=("init",))
    for c, command in ((pod["spec"]["initContainers"][0], ["sh", "-c", "sleep 0.3"]),
                       (pod["spec"]["containers"][0], ["sleep", "30"])):
        c.update(image=image, imagePullPolicy="Never", command=command)
    scoped = Scoped(rt, labels)
    agent = MiniAgent(scoped, time.time)
    uid = pod["metadata"]["uid"]
    try:
        await agent.sync(pod)
        assert state(pod, "init") == "running:" and pod["status"]["phase"] == "Pending"
        [init] = agent.created
        await wait_for(rt, init, exited)
        await agent.sync(pod)
        assert state(pod, "init") == "terminated:Completed" and state(pod, "web") == "running:"
        assert pod["status"]["phase"] == "Running" and pod["status"]["podIP"]

        before = statuses(pod)
        agent = MiniAgent(Scoped(DockerRuntime(rt.client, sandbox_image=image), labels),
                          time.time)  # the agent restarts and adopts
        await agent.sync(pod)
        assert agent.created == [] and statuses(pod) == before
    finally:
        for box in await rt.list_sandboxes({"corral.dev/pod-uid": uid}):
            await rt.remove_sandbox(box.id)


async def collect(session: ExecSession) -> dict[int, bytes]:
    got: dict[int, bytes] = {}
    async for stream, chunk in session.output():
        got[stream] = got.get(stream, b"") + chunk
    return got


async def running(rt: DockerRuntime, image: str, labels: dict[str, str], *command: str,
                  **kw: Any) -> str:
    sid = await rt.run_sandbox(SandboxConfig("u1", "ns", "p", "p", labels=labels))
    cid = await rt.create_container(sid, ctr("c", image, labels, *command, **kw))
    await rt.start_container(cid)
    return cid


async def read_logs(rt: DockerRuntime, cid: str, **options: Any) -> bytes:
    return b"".join([chunk async for chunk in rt.container_logs(cid, LogOptions(**options))])


@pytest.mark.privileged
async def test_logs_tail_since_timestamps_follow(rt: DockerRuntime, image: str, docker_client: Any,
                                                 labels: dict[str, str]) -> None:
    cid = await running(rt, image, labels, "sh", "-c",
                        "echo one; sleep 0.1; echo two >&2; sleep 0.1; echo three; read x; "
                        "echo four; sleep 30",
                        stdin=True)
    await wait_for(rt, cid, lambda c: "three" in logs(docker_client, cid))
    assert await read_logs(rt, cid) == b"one\ntwo\nthree\n"
    assert await read_logs(rt, cid, tail=2) == b"two\nthree\n"
    assert await read_logs(rt, cid, tail=0) == b""
    assert await read_logs(rt, cid, since=time.time() + 3600) == b""
    stamped = (await read_logs(rt, cid, tail=1, timestamps=True)).decode()
    stamp, _, line = stamped.partition(" ")
    assert line == "three\n" and abs(parse_time(stamp) - time.time()) < 60  # type: ignore[operator]
    # follow: what is written later arrives; stopping early releases the stream.
    followed = rt.container_logs(cid, LogOptions(follow=True, tail=0))
    reader = asyncio.ensure_future(anext(followed))
    await asyncio.sleep(0.3)
    session = await rt.attach(cid, stdin=True)
    await session.write_stdin(b"go\n")
    assert await asyncio.wait_for(reader, 10) == b"four\n"
    await followed.aclose()  # type: ignore[attr-defined]
    await session.close()
    with pytest.raises(NotFound):
        await read_logs(rt, "no-such-container")


@pytest.mark.privileged
async def test_exec_output_exit_code_and_stdin(rt: DockerRuntime, image: str,
                                               labels: dict[str, str]) -> None:
    cid = await running(rt, image, labels, "sleep", "30")
    session = await rt.exec(cid, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert await collect(session) == {STDOUT: b"out\n", STDERR: b"err\n"}
    assert await session.wait() == 3
    await session.close()
    await session.close()  # idempotent

    session = await rt.exec(cid, ["sh", "-c", "tr a-z A-Z; echo done"], stdin=True)
    await session.write_stdin(b"hello ")
    await session.write_stdin(b"world\n")
    await session.close_stdin()
    assert await asyncio.wait_for(collect(session), 10) == {STDOUT: b"HELLO WORLD\ndone\n"}
    assert await session.wait() == 0
    await session.close()

    # Closing a session whose process still runs kills it.
    session = await rt.exec(cid, ["sleep", "300"])
    await asyncio.sleep(0.3)
    await session.close()
    assert await asyncio.wait_for(session.wait(), 10) == 137


@pytest.mark.privileged
async def test_exec_with_a_tty_and_in_stopped_containers(rt: DockerRuntime, image: str,
                                                         labels: dict[str, str]) -> None:
    cid = await running(rt, image, labels, "sleep", "30")
    session = await rt.exec(cid, ["sh", "-c", "stty size; echo err >&2"], tty=True)
    got = await asyncio.wait_for(collect(session), 10)
    assert list(got) == [STDOUT] and b"err\r\n" in got[STDOUT]  # one stream, a terminal's CRLF
    assert await session.wait() == 0
    await session.close()

    session = await rt.exec(cid, ["sh", "-c", "read x; stty size"], stdin=True, tty=True)
    await session.resize(100, 40)
    await session.write_stdin(b"\n")
    got = await asyncio.wait_for(collect(session), 10)
    assert b"40 100" in got[STDOUT]
    await session.close()

    await rt.stop_container(cid, timeout=0)
    with pytest.raises(RuntimeFailure):
        await rt.exec(cid, ["true"])
    with pytest.raises(RuntimeFailure, match="not running"):
        await rt.attach(cid)
    with pytest.raises(NotFound):
        await rt.exec("no-such-container", ["true"])


@pytest.mark.privileged
async def test_attach_to_the_main_process(rt: DockerRuntime, image: str,
                                          labels: dict[str, str]) -> None:
    cid = await running(rt, image, labels, "sh", "-c",
                        "read line; echo got $line; echo bye >&2; exit 4", stdin=True)
    session = await rt.attach(cid, stdin=True)
    await session.write_stdin(b"ping\n")
    got = await asyncio.wait_for(collect(session), 10)
    assert got == {STDOUT: b"got ping\n", STDERR: b"bye\n"}
    assert await asyncio.wait_for(session.wait(), 10) == 4
    await session.close()

"""ProcessRuntime on real host processes (no root): the lifecycle contract, real exits and
their reasons, stop's SIGTERM-then-SIGKILL, logs (tail, since, timestamps, follow), exec (pipes,
stdin, a TTY) and attach, adoption by a fresh runtime over the same state directory, a lost
supervisor, start errors, and the MiniAgent loop of test_fake_runtime driving pods for real.

Every test gets its own state directory; the fixture removes every container it left, and
kills by pid whatever still runs."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from runtimekit import (
    MiniAgent,
    container_status,
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
    LogOptions,
    NotFound,
    Runtime,
    RuntimeFailure,
    SandboxConfig,
)
from nodeagent.runtime.process import ProcessRuntime

IMAGE = "any/image:1"
STAMP = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z $")


def _kill_leftovers(state_dir: Path) -> None:
    for state_file in (state_dir / "containers").glob("*/state.json"):
        state = json.loads(state_file.read_text())
        for key, kill in (("pid", os.killpg), ("supervisor", os.kill)):
            if key in state and "exit_code" not in state:
                try:
                    kill(state[key], signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[ProcessRuntime]:
    runtime = ProcessRuntime(tmp_path / "state")
    try:
        yield runtime
    finally:
        try:
            for c in await runtime.list_containers():
                await runtime.remove_container(c.id)
        finally:
            _kill_leftovers(tmp_path / "state")


async def sandbox(rt: ProcessRuntime) -> str:
    return await rt.run_sandbox(SandboxConfig("u1", "ns", "p", "p"))


async def started(rt: ProcessRuntime, sid: str, *command: str, **kw: Any) -> str:
    cid = await rt.create_container(sid, ContainerConfig("c", IMAGE, command=command, **kw))
    await rt.start_container(cid)
    return cid






async def logs(rt: ProcessRuntime, cid: str, **options: Any) -> bytes:
    return b"".join([chunk async for chunk in rt.container_logs(cid, LogOptions(**options))])


async def wait_logged(rt: ProcessRuntime, cid: str, text: bytes, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in await logs(rt, cid):
        assert time.monotonic() < deadline, f"{text!r} never logged"
        await asyncio.sleep(0.05)


async def collect(session: ExecSession) -> dict[int, bytes]:
    out = {STDOUT: b"", STDERR: b""}
    async for stream, chunk in session.output():
        out[stream] += chunk
    return out


def test_implements_every_method_of_the_protocol_with_its_signature() -> None:
    names = [n for n, _ in inspect.getmembers(Runtime, inspect.isfunction)
             if not n.startswith("_")]
    for name in names:
        ours = getattr(ProcessRuntime, name)
        assert inspect.signature(ours) == inspect.signature(getattr(Runtime, name)), name
        assert (inspect.isasyncgenfunction(ours) if name == "container_logs"
                else inspect.iscoroutinefunction(ours)), name


async def test_lifecycle_contract(rt: ProcessRuntime) -> None:
    await lifecycle_contract(rt, IMAGE, {"corral.dev/test": "1"})
    assert await rt.image_present("never/pulled:2")
    assert (await rt.pull_image(IMAGE)).startswith("sha256:")


async def test_exits_reasons_config_and_start_errors(rt: ProcessRuntime,
                                                     tmp_path: Path) -> None:
    sid = await sandbox(rt)
    [box] = await rt.list_sandboxes()
    assert box.ip == "127.0.0.1"
    up = await started(rt, sid, "sh", "-c", "echo hi; sleep 30")
    bad = await started(rt, sid, "sh", "-c", "exit 3")
    ok = await started(rt, sid, "true")
    env = await rt.create_container(sid, ContainerConfig(
        "env", IMAGE, command=("sh", "-c"), args=('echo "$V $PATH"; pwd',),
        env=(("V", "hello"),), working_dir=str(tmp_path)))
    await rt.start_container(env)
    await wait_logged(rt, up, b"hi\n")
    c = await container_status(rt, up)
    assert c.state is ContainerState.RUNNING and c.finished_at is None and c.started_at
    c = await wait_for(rt, bad, exited)
    assert (c.exit_code, c.reason) == (3, "Error")
    assert c.started_at and c.finished_at and c.started_at <= c.finished_at <= time.time()
    c = await wait_for(rt, ok, exited)
    assert (c.exit_code, c.reason) == (0, "Completed")
    assert (await wait_for(rt, env, exited)).exit_code == 0
    assert await logs(rt, env) == (
        b"hello /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        + str(tmp_path).encode() + b"\n")

    with pytest.raises(CreateContainerError, match="needs a command"):
        await rt.create_container(sid, ContainerConfig("none", IMAGE))
    missing = await rt.create_container(sid, ContainerConfig("m", IMAGE, command=("nope-x1",)))
    with pytest.raises(CreateContainerError,
                       match=r'exec: "nope-x1": executable file not found in \$PATH'):
        await rt.start_container(missing)
    c = await container_status(rt, missing)
    assert c.state is ContainerState.CREATED and "executable file not found" in c.message
    nofile = await rt.create_container(sid, ContainerConfig("f", IMAGE, command=("/no/such",)))
    with pytest.raises(CreateContainerError, match="no such file or directory"):
        await rt.start_container(nofile)
    with pytest.raises(NotFound):
        await rt.create_container("0" * 32, ContainerConfig("c", IMAGE, command=("true",)))
    with pytest.raises(NotFound):
        await rt.stop_container("../../etc", 0)

    await rt.remove_sandbox(sid)  # removes its running container too
    assert await rt.list_containers() == [] and await rt.list_sandboxes() == []


async def test_stop_kills_after_the_timeout(rt: ProcessRuntime) -> None:
    sid = await sandbox(rt)
    cid = await started(rt, sid, "sh", "-c",
                        "trap 'echo TERM' TERM; echo ready; while :; do sleep 0.1; done")
    await wait_logged(rt, cid, b"ready\n")
    began = time.monotonic()
    await rt.stop_container(cid, timeout=1)
    took = time.monotonic() - began
    c = await container_status(rt, cid)
    assert (c.state, c.exit_code, c.reason) == (ContainerState.EXITED, 137, "Error")
    assert 1 <= took < 3, took
    assert b"TERM" in await logs(rt, cid)  # it got SIGTERM first

    polite = await started(rt, sid, "sleep", "30")
    await rt.stop_container(polite, timeout=5)  # SIGTERM is enough
    assert (await container_status(rt, polite)).exit_code == 128 + signal.SIGTERM


async def test_what_a_container_leaves_behind_is_killed_when_it_exits(
        rt: ProcessRuntime, tmp_path: Path) -> None:
    sid = await sandbox(rt)
    for output in ("", " >/dev/null 2>&1"):  # holding the log's pipes, or not
        pidfile = tmp_path / "left.pid"
        cid = await started(rt, sid, "sh", "-c",
                            f"sleep 30{output} & echo $! > {pidfile}; echo main done")
        c = await wait_for(rt, cid, exited)
        assert (c.exit_code, await logs(rt, cid)) == (0, b"main done\n")
        stat = Path(f"/proc/{int(pidfile.read_text())}/stat")
        deadline = time.monotonic() + 5
        while stat.exists() and ") Z " not in stat.read_text():
            assert time.monotonic() < deadline, "the background sleep outlived its container"
            await asyncio.sleep(0.05)


async def test_logs_tail_since_timestamps_and_follow(rt: ProcessRuntime) -> None:
    sid = await sandbox(rt)
    cid = await started(rt, sid, "sh", "-c",
                        "echo one; sleep 0.1; echo two >&2; sleep 0.3; echo three; printf four")
    await wait_for(rt, cid, exited)
    assert await logs(rt, cid) == b"one\ntwo\nthree\nfour\n"
    assert await logs(rt, cid, tail=2) == b"three\nfour\n"
    assert await logs(rt, cid, tail=0) == b""
    stamped = (await logs(rt, cid, timestamps=True)).splitlines()
    assert [line[31:] for line in stamped] == [b"one", b"two", b"three", b"four"]
    assert all(STAMP.match(line[:31]) for line in stamped)
    third = stamped[2][:30].decode()
    since = time.mktime(time.strptime(third[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone \
        + int(third[20:29]) / 1e9
    assert await logs(rt, cid, since=since - 0.01) == b"three\nfour\n"
    with pytest.raises(NotFound):
        await logs(rt, "f" * 32)

    ticker = await started(rt, sid, "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done")
    followed = await asyncio.wait_for(logs(rt, ticker, follow=True), 10)
    assert followed == b"1\n2\n3\n"  # and it ended when the container did
    assert await asyncio.wait_for(logs(rt, ticker, follow=True, tail=1), 5) == b"3\n"


async def test_exec_output_exit_code_stdin_and_tty(rt: ProcessRuntime, tmp_path: Path) -> None:
    sid = await sandbox(rt)
    cid = await started(rt, sid, "sleep", "30", env=(("V", "from-env"),),
                        working_dir=str(tmp_path))
    session = await rt.exec(cid, ["sh", "-c", 'echo "$V"; pwd; echo err >&2; exit 4'])
    assert await collect(session) == {STDOUT: f"from-env\n{tmp_path}\n".encode(),
                                      STDERR: b"err\n"}
    assert await session.wait() == 4
    await session.close()
    await session.close()  # idempotent

    cat = await rt.exec(cid, ["cat"], stdin=True)
    await cat.write_stdin(b"in and out\n")
    await cat.close_stdin()
    assert (await collect(cat))[STDOUT] == b"in and out\n" and await cat.wait() == 0
    await cat.close()

    tty = await rt.exec(cid, ["sh", "-c", "test -t 0 && test -t 1 && stty size && cat"],
                        stdin=True, tty=True)
    await tty.resize(100, 30)
    await asyncio.sleep(0.05)
    await tty.write_stdin(b"typed\n")
    await tty.close_stdin()
    out = await asyncio.wait_for(collect(tty), 10)
    assert out[STDERR] == b"" and b"typed" in out[STDOUT], out
    assert await tty.wait() == 0
    await tty.close()

    hung = await rt.exec(cid, ["sleep", "30"])
    await hung.close()  # kills it
    assert await hung.wait() == 137

    with pytest.raises(RuntimeFailure, match="executable file not found"):
        await rt.exec(cid, ["nope-x1"])
    await rt.stop_container(cid, 0)
    with pytest.raises(RuntimeFailure, match="not running"):
        await rt.exec(cid, ["true"])


async def test_attach_streams_output_and_stdin(rt: ProcessRuntime) -> None:
    sid = await sandbox(rt)
    cid = await started(rt, sid, "sh", "-c",
                        "echo before; while read line; do echo got $line; echo e >&2; done",
                        stdin=True)
    await wait_logged(rt, cid, b"before\n")
    session = await rt.attach(cid, stdin=True)
    await session.write_stdin(b"x\n")
    output = session.output()
    assert await anext(output) == (STDOUT, b"got x\n")  # from now: not "before"
    assert await anext(output) == (STDERR, b"e\n")
    await session.close_stdin()  # stdin stays open for the process (no stdinOnce)
    again = await rt.attach(cid, stdin=True, tty=True)
    await again.write_stdin(b"y\n")
    tty_output = again.output()
    assert await anext(tty_output) == (STDOUT, b"got y\n")
    assert await anext(tty_output) == (STDOUT, b"e\n")  # with a TTY, all is STDOUT
    await again.close()
    await rt.stop_container(cid, 0)
    assert await session.wait() == 137
    # the first session saw the second's input answered too, then ended with the container
    assert [item async for item in output] == [(STDOUT, b"got y\n"), (STDERR, b"e\n")]
    await session.close()

    plain = await started(rt, sid, "sleep", "30")
    with pytest.raises(RuntimeFailure, match="not created with stdin"):
        await rt.attach(plain, stdin=True)


async def test_fresh_runtime_adopts_what_runs(rt: ProcessRuntime, tmp_path: Path) -> None:
    sid = await sandbox(rt)
    cid = await started(rt, sid, "sh", "-c", "echo up; sleep 30")
    await wait_logged(rt, cid, b"up\n")
    boxes, ctrs = await rt.list_sandboxes(), await rt.list_containers(sid)
    again = ProcessRuntime(tmp_path / "state")
    assert await again.list_sandboxes() == boxes and await again.list_containers(sid) == ctrs
    [c] = ctrs
    assert (c.id, c.state) == (cid, ContainerState.RUNNING)
    assert await logs(again, cid) == b"up\n"
    await again.stop_container(cid, 0)
    c = await container_status(rt, cid)
    assert (c.state, c.exit_code) == (ContainerState.EXITED, 137)
    await again.remove_container(cid)
    with pytest.raises(NotFound):
        await rt.remove_container(cid)


async def test_lost_supervisor_is_unknown_and_stop_settles_it(rt: ProcessRuntime,
                                                              tmp_path: Path) -> None:
    sid = await sandbox(rt)
    cid = await started(rt, sid, "sleep", "30")
    state_file = tmp_path / "state" / "containers" / cid / "state.json"
    recorded = json.loads(state_file.read_text())
    os.kill(recorded["supervisor"], signal.SIGKILL)
    os.killpg(recorded["pid"], signal.SIGKILL)
    c = await wait_for(rt, cid, lambda c: c.state is ContainerState.UNKNOWN)
    assert c.state is ContainerState.UNKNOWN and "lost" in c.message
    await rt.stop_container(cid, 30)
    c = await container_status(rt, cid)
    assert (c.state, c.exit_code, c.reason) == (ContainerState.EXITED, 255, "Error")

    # a pid that now belongs to another process is not ours
    cid = await started(rt, sid, "sleep", "30")
    state_file = tmp_path / "state" / "containers" / cid / "state.json"
    recorded = json.loads(state_file.read_text())
    reused = {**recorded, "pid": os.getpid(), "supervisor": os.getpid()}
    state_file.write_text(json.dumps(reused))
    assert (await container_status(rt, cid)).state is ContainerState.UNKNOWN
    state_file.write_text(json.dumps(recorded))
    assert (await container_status(rt, cid)).state is ContainerState.RUNNING


async def test_mini_agent_runs_pods_for_real(rt: ProcessRuntime, tmp_path: Path) -> None:
    pod = make_pod("u1", "Always", ["web", "nocmd"], inits=("init",))
    pod["spec"]["initContainers"][0]["command"] = ["sh", "-c", "sleep 0.2"]
    pod["spec"]["containers"][0]["command"] = ["sleep", "30"]
    agent = MiniAgent(rt, time.time)
    await agent.sync(pod)
    assert state(pod, "init") == "running:" and pod["status"]["phase"] == "Pending"
    [init] = agent.created
    await wait_for(rt, init, exited)
    await agent.sync(pod)
    assert state(pod, "init") == "terminated:Completed" and state(pod, "web") == "running:"
    assert state(pod, "nocmd") == "waiting:CreateContainerError"
    assert "needs a command" in statuses(pod)["nocmd"]["state"]["waiting"]["message"]
    assert pod["status"]["podIP"] == "127.0.0.1"

    # the agent restarts and adopts: nothing new is started, the same is reported
    before = statuses(pod)["web"]
    agent = MiniAgent(ProcessRuntime(tmp_path / "state"), time.time)
    await agent.sync(pod)
    assert agent.created == [] and statuses(pod)["web"] == before

    job = make_pod("u2", "Never", ["job"])
    job["spec"]["containers"][0]["command"] = ["sh", "-c", "exit 1"]
    await agent.sync(pod, job)
    [cid] = agent.created
    await wait_for(rt, cid, exited)
    await agent.sync(pod, job)
    assert job["status"]["phase"] == "Failed"
    assert statuses(job)["job"]["state"]["terminated"]["exitCode"] == 1

"""``python -m overlay.main [-f|--foreground] INTERFACE``: a WireGuard interface, run as wireguard-go runs.

It creates the TUN interface (MTU 1420), serves the UAPI socket
``/var/run/wireguard/INTERFACE.sock`` for ``wg``, and carries traffic until SIGTERM or SIGINT,
or until the interface is deleted; on the way out it removes the socket, and closing the TUN
descriptor removes the interface. The interface may be moved into another network namespace
after it is created (``ip link set INTERFACE netns NS``): the process keeps the descriptor and
its UDP socket stays in the namespace it was started in, which is how wireguard-go's
``netns.sh`` tests drive any implementation. The UAPI socket lives in the file system, which
network namespaces share.

Without ``-f`` the command detaches as wireguard-go does: it starts itself again with
``--foreground`` in a new session, and returns 0 only once that child has the interface and
the socket ready (1 if the child failed), so ``ip link set INTERFACE up`` may follow at once.
The readiness signal is one line on a pipe whose write end the child inherits; until it is
ready the child reports errors on the caller's stderr, afterwards its standard streams point
at /dev/null and the command prints nothing, unless ``LOG_LEVEL`` asks for more than errors:
then, as with wireguard-go, the detached process keeps logging to the stderr it inherited.

``LOG_LEVEL`` is ``debug``, ``verbose`` (info), ``error`` (the default) or ``silent``, the
values wireguard-go reads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys

from overlay.device import Device
from overlay.tun import DEFAULT_MTU, TunDevice
from overlay.uapi import UapiServer

log = logging.getLogger(__name__)

LOG_LEVELS = {"debug": logging.DEBUG, "verbose": logging.INFO, "error": logging.ERROR,
              "silent": logging.CRITICAL + 1}
READY = b"ready\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m overlay.main",
                                     description="Run a WireGuard interface served over the wg UAPI.")
    parser.add_argument("-f", "--foreground", action="store_true", help="do not detach")
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("interface", help="name of the TUN interface to create")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = LOG_LEVELS.get(os.environ.get("LOG_LEVEL", "error"), logging.ERROR)
    logging.basicConfig(level=level,
                        format=f"%(asctime)s %(levelname)s ({args.interface}) %(name)s: %(message)s")
    if not args.foreground:
        return _detach(args.interface)
    try:
        return asyncio.run(_run(args.interface, args.ready_fd, keep_stderr=level < logging.ERROR))
    except OSError as error:
        log.error("cannot run %s: %s", args.interface, error)
        return 1


def _detach(ifname: str) -> int:
    """Start the foreground process in a new session; wait until it says it is ready."""
    read_end, write_end = os.pipe()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "overlay.main", "--foreground", "--ready-fd", str(write_end), ifname],
            pass_fds=(write_end,), start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as ready:
        if ready.readline() == READY:
            return 0
    return child.wait() or 1


async def _run(ifname: str, ready_fd: int | None, *, keep_stderr: bool) -> int:
    tun = TunDevice.create(ifname, vnet_hdr=True)
    try:
        tun.set_mtu(DEFAULT_MTU)
        device = Device(ifname, tun)
        device.start()
        try:
            async with UapiServer(ifname, device):
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(signum, stop.set)
                if ready_fd is not None:
                    _announce_ready(ready_fd, keep_stderr=keep_stderr)
                log.info("interface %s is up", ifname)
                stopped = asyncio.create_task(stop.wait(), name="signal")
                failed = asyncio.create_task(device.wait_failed(), name="device failure")
                done, pending = await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                log.info("shutting down %s", ifname)
                return 1 if failed in done else 0
        finally:
            await device.close()
    finally:
        tun.close()


def _announce_ready(ready_fd: int, *, keep_stderr: bool) -> None:
    """Tell the detaching parent we are up, then let go of its terminal."""
    os.write(ready_fd, READY)
    os.close(ready_fd)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1) if keep_stderr else (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())

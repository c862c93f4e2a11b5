"""Corral's overlay against wireguard-go: handshakes both ways, data, ``wg show`` on both sides.

Namespace A runs ``python -m overlay.main -f`` and namespace B runs ``wireguard-go -f``; a veth
pair on 198.18.0.0/15 joins them and carries the encrypted UDP. Each test starts a fresh pair,
so the side that sends first is also the side that initiates the handshake. The ``Lab`` harness
from ``test_device.py`` removes every namespace, process and socket afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overlay.uapi import serving_pid
from tests.overlay.test_device import (
    TUNNEL_MTU,
    Keys,
    Lab,
    iperf3,
    ping,
    show_peers,
    wait_for,
)

log = logging.getLogger(__name__)

WIREGUARD_GO_ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1", "LOG_LEVEL": "debug"}


@dataclass
class Pair:
    lab: Lab
    ns_corral: str
    ns_go: str
    if_corral: str
    if_go: str
    key_corral: Keys
    key_go: Keys
    corral_log: Path


@pytest.fixture
def pair(require: Callable[[str], None], tmp_path: Path) -> Iterator[Pair]:
    if os.geteuid() != 0 or shutil.which("ip") is None or not os.path.exists("/dev/net/tun"):
        require("root, ip netns, TUN and wireguard-go")
    for tool in ("wireguard-go", "wg", "iperf3"):
        if shutil.which(tool) is None:
            require(tool)
    lab = Lab(tmp_path)
    try:
        ns_corral, ns_go = lab.netns("A"), lab.netns("B")
        lab.veth(ns_corral, ns_go, "198.18.42.1/24", "198.18.42.2/24")
        if_corral, if_go = lab.ifname("c"), lab.ifname("g")
        key_corral, key_go = Keys.generate(), Keys.generate()
        corral_log = lab.corral(ns_corral, if_corral, foreground=True)
        lab.spawn(ns_go, "wireguard-go", "-f", if_go, env=WIREGUARD_GO_ENV)
        wait_for(lambda: serving_pid(if_go) is not None, "wireguard-go's UAPI socket")
        lab.configure(if_corral, key_corral, 51820, key_go, "10.99.0.2/32", "198.18.42.2:51820")
        lab.configure(if_go, key_go, 51820, key_corral, "10.99.0.1/32", "198.18.42.1:51820")
        lab.address(ns_corral, if_corral, "10.99.0.1/24")
        lab.address(ns_go, if_go, "10.99.0.2/24")
        yield Pair(lab, ns_corral, ns_go, if_corral, if_go, key_corral, key_go, corral_log)
    finally:
        lab.close()


def assert_handshake_shown(ifname: str, peer: Keys, endpoint: str) -> None:
    (shown,) = show_peers(ifname)
    assert shown.public_key == peer.public
    assert shown.endpoint == endpoint
    assert time.time() - 30 < shown.latest_handshake <= time.time() + 1
    assert shown.rx_bytes > 0 and shown.tx_bytes > 0


@pytest.mark.privileged
def test_corral_initiates_to_wireguard_go(pair: Pair) -> None:
    assert ping(pair.ns_corral, "10.99.0.2")
    assert ping(pair.ns_go, "10.99.0.1")
    assert_handshake_shown(pair.if_corral, pair.key_go, "198.18.42.2:51820")
    assert_handshake_shown(pair.if_go, pair.key_corral, "198.18.42.1:51820")
    assert "handshake complete (initiator)" in pair.corral_log.read_text()
    bits = iperf3(pair.ns_go, pair.ns_corral, "10.99.0.2")
    log.info("iperf3 Corral -> wireguard-go at MTU %d: %.0f Mbit/s", TUNNEL_MTU, bits / 1e6)


@pytest.mark.privileged
def test_wireguard_go_initiates_to_corral(pair: Pair) -> None:
    assert ping(pair.ns_go, "10.99.0.1")
    assert ping(pair.ns_corral, "10.99.0.2")
    assert_handshake_shown(pair.if_go, pair.key_corral, "198.18.42.1:51820")
    assert_handshake_shown(pair.if_corral, pair.key_go, "198.18.42.2:51820")
    corral_log = pair.corral_log.read_text()
    assert "handshake complete (responder)" in corral_log
    assert "sending handshake initiation" not in corral_log
    bits = iperf3(pair.ns_corral, pair.ns_go, "10.99.0.1")
    log.info("iperf3 wireguard-go -> Corral at MTU %d: %.0f Mbit/s", TUNNEL_MTU, bits / 1e6)

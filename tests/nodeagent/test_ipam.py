"""Host-local IPAM and the podCIDR arithmetic under it (no root): which addresses are handed
out and in what order, persistence across instances (an agent restart), a changed podCIDR,
concurrency, a property test that no address is ever held twice, and FakePodNetwork."""

from __future__ import annotations

import tempfile
import threading
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.network import FakePodNetwork, HostLocalIPAM, PodNetworkError
from nodeagent.network.addresses import (
    gateway_of,
    is_assignable,
    parse_pod_cidr,
    pick_next,
)

NET = IPv4Network("10.244.0.0/29")  # .2 to .6 assignable


@pytest.mark.parametrize(
    ("in_use", "last", "expected"),
    [
        ([], None, "10.244.0.2"),
        (["10.244.0.2"], None, "10.244.0.3"),
        ([], "10.244.0.2", "10.244.0.3"),
        ([], "10.244.0.6", "10.244.0.2"),  # wraps around
        (["10.244.0.2", "10.244.0.3"], "10.244.0.6", "10.244.0.4"),
        ([], "10.244.0.1", "10.244.0.2"),  # the gateway as cursor: start at the beginning
        ([], "192.168.0.9", "10.244.0.2"),  # a cursor from another podCIDR
        (["10.244.0.2", "10.244.0.3", "10.244.0.4", "10.244.0.5", "10.244.0.6"], None, None),
        (["10.244.0.2", "10.244.0.3", "10.244.0.5", "10.244.0.6"], "10.244.0.5", "10.244.0.4"),
    ],
)
def test_pick_next(in_use: list[str], last: str | None, expected: str | None) -> None:
    got = pick_next(NET, [IPv4Address(a) for a in in_use],
                    IPv4Address(last) if last else None)
    assert (str(got) if got else None) == expected


@pytest.mark.parametrize(
    ("cidr", "error"),
    [
        ("10.244.0.1/24", "host bits"),
        ("fd00::/64", "only IPv4"),
        ("10.244.0.0/31", "no room"),
        ("nonsense", "invalid podCIDR"),
    ],
)
def test_parse_pod_cidr_rejects(cidr: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_pod_cidr(cidr)


def test_assignable_excludes_network_gateway_broadcast() -> None:
    net = parse_pod_cidr("10.244.3.0/24")
    assert str(gateway_of(net)) == "10.244.3.1"
    assert not is_assignable(net, IPv4Address("10.244.3.0"))
    assert not is_assignable(net, IPv4Address("10.244.3.1"))
    assert not is_assignable(net, IPv4Address("10.244.3.255"))
    assert not is_assignable(net, IPv4Address("10.244.4.2"))
    assert is_assignable(net, IPv4Address("10.244.3.2"))
    assert is_assignable(net, IPv4Address("10.244.3.254"))


def test_allocate_is_idempotent_per_owner(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.0.0/24", tmp_path)
    a = ipam.allocate("sandbox-a")
    assert a == "10.244.0.2"
    assert ipam.allocate("sandbox-a") == a
    assert ipam.allocate("sandbox-b") == "10.244.0.3"
    assert ipam.lookup("sandbox-a") == a
    assert ipam.lookup("nobody") is None
    assert ipam.allocations() == {"sandbox-a": "10.244.0.2", "sandbox-b": "10.244.0.3"}
    assert (tmp_path / "10.244.0.2").read_text() == "sandbox-a\n"


def test_freed_address_is_not_reused_at_once(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.0.0/24", tmp_path)
    assert ipam.allocate("a") == "10.244.0.2"
    ipam.release("a")
    assert ipam.lookup("a") is None
    assert ipam.allocate("b") == "10.244.0.3"
    ipam.release("b")
    ipam.release("b")  # releasing twice, or what was never held, is fine
    ipam.release("never")
    assert ipam.allocate("c") == "10.244.0.4"


def test_full_subnet_raises_and_wraps_after_release(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.0.0/29", tmp_path)
    got = [ipam.allocate(f"s{i}") for i in range(5)]
    assert got == [f"10.244.0.{n}" for n in range(2, 7)]
    with pytest.raises(PodNetworkError, match=r"^no free IP in 10\.244\.0\.0/29$"):
        ipam.allocate("one-too-many")
    ipam.release("s1")  # .3
    assert ipam.allocate("late") == "10.244.0.3"  # the only free one, found by wrapping


def test_state_survives_a_new_instance(tmp_path: Path) -> None:
    first = HostLocalIPAM("10.244.0.0/24", tmp_path)
    first.allocate("a")
    first.allocate("b")
    first.release("b")
    second = HostLocalIPAM("10.244.0.0/24", tmp_path)
    assert second.lookup("a") == "10.244.0.2"
    assert second.allocate("a") == "10.244.0.2"
    assert second.allocate("c") == "10.244.0.4"  # the cursor survived too


def test_changed_subnet_ignores_and_drops_old_allocations(tmp_path: Path) -> None:
    old = HostLocalIPAM("10.244.0.0/24", tmp_path)
    old.allocate("a")
    old.allocate("b")
    new = HostLocalIPAM("10.244.7.0/24", tmp_path)
    assert new.lookup("a") is None
    assert new.allocations() == {}
    assert new.allocate("a") == "10.244.7.2"
    assert not (tmp_path / "10.244.0.2").exists()
    assert not (tmp_path / "10.244.0.3").exists()  # every out-of-subnet file goes
    assert new.allocations() == {"a": "10.244.7.2"}


def test_release_drops_an_owner_outside_the_subnet(tmp_path: Path) -> None:
    HostLocalIPAM("10.244.0.0/24", tmp_path).allocate("a")
    new = HostLocalIPAM("10.244.7.0/24", tmp_path)
    new.release("a")
    assert not (tmp_path / "10.244.0.2").exists()


def test_stray_files_are_ignored_and_no_temporaries_are_left(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("not an allocation")
    (tmp_path / "fd00::5").write_text("an IPv6 file")
    ipam = HostLocalIPAM("10.244.0.0/24", tmp_path)
    ipam.allocate("a")
    ipam.release("a")
    ipam.allocate("b")
    assert ipam.allocations() == {"b": "10.244.0.3"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("owner", ["", " padded", "two\nlines"])
def test_invalid_owner(tmp_path: Path, owner: str) -> None:
    with pytest.raises(PodNetworkError, match="invalid IPAM owner"):
        HostLocalIPAM("10.244.0.0/24", tmp_path).allocate(owner)


def test_invalid_subnet_is_a_pod_network_error(tmp_path: Path) -> None:
    with pytest.raises(PodNetworkError, match="invalid podCIDR"):
        HostLocalIPAM("10.244.0.0/33", tmp_path)


def test_concurrent_allocations_are_distinct(tmp_path: Path) -> None:
    # Two instances over one directory behave as two processes would (flock), and threads
    # within each share its lock.
    instances = [HostLocalIPAM("10.244.0.0/24", tmp_path) for _ in range(2)]
    results: dict[str, str] = {}
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(20):
            owner = f"t{n}-{i}"
            ip = instances[n % 2].allocate(owner)
            with lock:
                results[owner] = ip

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 120
    assert len(set(results.values())) == 120
    assert instances[0].allocations() == results


operations = st.lists(
    st.tuples(st.sampled_from(["allocate", "release", "restart"]), st.integers(0, 7)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=operations)
def test_no_address_is_ever_held_twice(ops: list[tuple[str, int]]) -> None:
    """Model: owner -> address. Whatever the order of allocations, releases and restarts (new
    instances over the same directory), every live address is assignable and held by one owner,
    an owner keeps its address until released, and allocation fails only when all are held."""
    subnet = "10.9.0.0/29"  # 5 addresses for 8 owners: fills up, frees, wraps
    net = parse_pod_cidr(subnet)
    with tempfile.TemporaryDirectory() as tmp:
        ipam = HostLocalIPAM(subnet, Path(tmp))
        model: dict[str, str] = {}
        for op, n in ops:
            owner = f"sandbox-{n}"
            if op == "allocate":
                try:
                    ip = ipam.allocate(owner)
                except PodNetworkError:
                    assert owner not in model and len(model) == 5
                    continue
                if owner in model:
                    assert ip == model[owner]
                assert ip not in {v for k, v in model.items() if k != owner}
                assert is_assignable(net, IPv4Address(ip))
                model[owner] = ip
            elif op == "release":
                ipam.release(owner)
                model.pop(owner, None)
            else:
                ipam = HostLocalIPAM(subnet, Path(tmp))
            assert ipam.allocations() == model
            assert len(set(model.values())) == len(model)


# -- FakePodNetwork ------------------------------------------------------------------------

async def test_fake_pod_network() -> None:
    net = FakePodNetwork("10.244.5.0/24")
    a = await net.attach("sb-a", "/proc/1/ns/net")
    assert a == "10.244.5.2"
    assert await net.attach("sb-a", "/proc/1/ns/net") == a
    assert await net.attach("sb-b", "/proc/2/ns/net") == "10.244.5.3"
    assert net.ip_of("sb-a") == a
    await net.detach("sb-a", None)
    await net.detach("sb-a", None)
    assert net.ip_of("sb-a") is None
    assert await net.attach("sb-c", "/proc/3/ns/net") == "10.244.5.4"  # round-robin
    net.fail_next_attach("no veth for you")
    with pytest.raises(PodNetworkError, match="no veth for you"):
        await net.attach("sb-d", "/proc/4/ns/net")
    assert net.ip_of("sb-d") is None
    assert net.allocations() == {"sb-b": "10.244.5.3", "sb-c": "10.244.5.4"}
    assert net.calls[0] == ("attach", "sb-a", "/proc/1/ns/net")
    assert ("detach", "sb-a", None) in net.calls


async def test_fake_pod_network_full() -> None:
    net = FakePodNetwork("10.244.5.0/30")  # only .2
    await net.attach("one", "/x")
    with pytest.raises(PodNetworkError, match="no free IP in 10.244.5.0/30"):
        await net.attach("two", "/y")

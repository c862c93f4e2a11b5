"""The Service proxy's rules (pure): the exact iptables-restore text for a small case, the
load-balancing probabilities, session affinity, NodePorts, LoadBalancer ingress IPs, Services
without endpoints, determinism, chain names, and malformed input skipped rather than
crashing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from controlplane.client import ENDPOINTS, SERVICES, ApiClient
from nodeagent.proxy import Proxier, RecordingApplier
from nodeagent.proxy.rules import (
    JUMPS,
    MAX_CHAIN_LEN,
    OWNED_PREFIXES,
    build,
    ext_chain,
    is_owned_chain,
    restore_input,
    sep_chain,
    svc_chain,
)

Obj = dict[str, Any]


def service(name: str = "web", *, cluster_ip: str = "10.96.10.10", ns: str = "default",
            ports: list[Obj] | None = None, **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": cluster_ip,
                     "ports": ports if ports is not None else
                     [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                     **spec}}


def endpoints(name: str = "web", ips: Sequence[str] = (), *, ns: str = "default",
              port_name: str = "http", port: int = 8080, not_ready: Sequence[str] = ()) -> Obj:
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"namespace": ns, "name": name},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips],
                         "notReadyAddresses": [{"ip": ip} for ip in not_ready],
                         "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}]}


SVC = svc_chain("default/web:http", "TCP")
SEP1 = sep_chain("default/web:http", "TCP", "10.244.1.2:8080")
SEP2 = sep_chain("default/web:http", "TCP", "10.244.1.3:8080")


def test_exact_text_for_one_service_with_two_endpoints() -> None:
    rules = build([service()], [endpoints(ips=["10.244.1.3", "10.244.1.2"],
                                          not_ready=["10.244.1.9"])],
                  cluster_cidr="10.244.0.0/16")
    assert restore_input("nat", rules.nat) == f"""*nat
:CORRAL-SERVICES - [0:0]
:CORRAL-NODEPORTS - [0:0]
:CORRAL-MARK-MASQ - [0:0]
:CORRAL-PROXY-POSTROUTING - [0:0]
:{SVC} - [0:0]
:{SEP1} - [0:0]
:{SEP2} - [0:0]
-A CORRAL-PROXY-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A CORRAL-PROXY-POSTROUTING -j MARK --xor-mark 0x4000
-A CORRAL-PROXY-POSTROUTING -m comment --comment "corral service traffic requiring SNAT" \
-j MASQUERADE
-A CORRAL-MARK-MASQ -j MARK --or-mark 0x4000
-A CORRAL-SERVICES -m comment --comment "default/web:http cluster IP" -d 10.96.10.10/32 \
-p tcp -m tcp --dport 80 -j {SVC}
-A CORRAL-SERVICES -m comment --comment "corral service nodeports" -m addrtype --dst-type LOCAL \
-j CORRAL-NODEPORTS
-A {SVC} -m comment --comment "default/web:http cluster IP" -d 10.96.10.10/32 -p tcp -m tcp \
--dport 80 ! -s 10.244.0.0/16 -j CORRAL-MARK-MASQ
-A {SVC} -m comment --comment "default/web:http -> 10.244.1.2:8080" -m statistic --mode random \
--probability 0.5000000000 -j {SEP1}
-A {SVC} -m comment --comment "default/web:http -> 10.244.1.3:8080" -j {SEP2}
-A {SEP1} -m comment --comment "default/web:http" -s 10.244.1.2/32 -j CORRAL-MARK-MASQ
-A {SEP1} -m comment --comment "default/web:http" -p tcp -m tcp -j DNAT \
--to-destination 10.244.1.2:8080
-A {SEP2} -m comment --comment "default/web:http" -s 10.244.1.3/32 -j CORRAL-MARK-MASQ
-A {SEP2} -m comment --comment "default/web:http" -p tcp -m tcp -j DNAT \
--to-destination 10.244.1.3:8080
COMMIT
"""
    assert restore_input("filter", rules.filter) == """*filter
:CORRAL-SERVICES-FILTER - [0:0]
:CORRAL-EXTERNAL-FILTER - [0:0]
COMMIT
"""


def _svc_jumps(n: int) -> list[str]:
    ips = [f"10.244.1.{i + 2}" for i in range(n)]
    rules = build([service()], [endpoints(ips=ips)])
    return [r for r in rules.nat.rules if r.startswith(f"-A {SVC} ")]


@pytest.mark.parametrize(("n", "expected"), [
    (1, [None]),
    (2, ["0.5000000000", None]),
    (3, ["0.3333333333", "0.5000000000", None]),
])
def test_probabilities_pick_each_endpoint_equally(n: int, expected: list[str | None]) -> None:
    jumps = _svc_jumps(n)
    assert len(jumps) == n
    for rule, probability in zip(jumps, expected, strict=True):
        if probability is None:
            assert "statistic" not in rule
        else:
            assert f"-m statistic --mode random --probability {probability} -j" in rule
    # In address order, each to its own SEP chain.
    targets = [rule.split(" -j ")[-1] for rule in jumps]
    assert targets == [sep_chain("default/web:http", "TCP", f"10.244.1.{i + 2}:8080")
                       for i in range(n)]


def test_session_affinity_checks_recent_first_and_sets_it_on_dnat() -> None:
    svc = service(sessionAffinity="ClientIP",
                  sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    rules = build([svc], [endpoints(ips=["10.244.1.2", "10.244.1.3"])])
    jumps = [r for r in rules.nat.rules if r.startswith(f"-A {SVC} ")]
    assert f"-m recent --name {SEP1} --rcheck --seconds 60 --reap -j {SEP1}" in jumps[0]
    assert f"-m recent --name {SEP2} --rcheck --seconds 60 --reap -j {SEP2}" in jumps[1]
    assert "--probability 0.5000000000" in jumps[2] and "recent" not in jumps[2]
    assert jumps[3].endswith(f"-j {SEP2}")
    dnat = [r for r in rules.nat.rules if "DNAT" in r]
    assert dnat == [
        (f'-A {SEP1} -m comment --comment "default/web:http" -m recent --name {SEP1} --set '
        "-p tcp -m tcp -j DNAT --to-destination 10.244.1.2:8080"),
        (f'-A {SEP2} -m comment --comment "default/web:http" -m recent --name {SEP2} --set '
        "-p tcp -m tcp -j DNAT --to-destination 10.244.1.3:8080"),
    ]
    # The default timeout is Kubernetes' 3 hours.
    default = build([service(sessionAffinity="ClientIP")], [endpoints(ips=["10.244.1.2"])])
    assert any("--rcheck --seconds 10800 --reap" in r for r in default.nat.rules)


def test_node_port_marks_outside_traffic_and_jumps_to_the_service() -> None:
    svc = service(type="NodePort", ports=[{"name": "http", "port": 80, "protocol": "TCP",
                                           "nodePort": 30080}])
    rules = build([svc], [endpoints(ips=["10.244.1.2"])], cluster_cidr="10.244.0.0/16")
    nodeports = [r for r in rules.nat.rules if r.startswith("-A CORRAL-NODEPORTS ")]
    assert nodeports == [
        ('-A CORRAL-NODEPORTS -m comment --comment "default/web:http" -p tcp -m tcp '
        "--dport 30080 ! -s 10.244.0.0/16 -j CORRAL-MARK-MASQ"),
        (f'-A CORRAL-NODEPORTS -m comment --comment "default/web:http" -p tcp -m tcp '
        f"--dport 30080 -j {SVC}"),
    ]
    services = [r for r in rules.nat.rules if r.startswith("-A CORRAL-SERVICES ")]
    assert services[-1].endswith("-m addrtype --dst-type LOCAL -j CORRAL-NODEPORTS")
    # Without a cluster CIDR every NodePort connection is masqueraded.
    plain = build([svc], [endpoints(ips=["10.244.1.2"])])
    assert any(r.endswith("--dport 30080 -j CORRAL-MARK-MASQ") for r in plain.nat.rules)
    # With node IPs, NodePorts answer on those only.
    pinned = build([svc], [endpoints(ips=["10.244.1.2"])], node_ips=["198.18.0.2", "bad"])
    services = [r for r in pinned.nat.rules if r.startswith("-A CORRAL-SERVICES ")]
    assert services[-1].endswith("-d 198.18.0.2/32 -j CORRAL-NODEPORTS")
    assert not any("addrtype" in r for r in pinned.nat.rules)
    # A ClusterIP Service's nodePort field (left over from a type change) is ignored.
    cluster_only = build([service(ports=svc["spec"]["ports"])], [endpoints(ips=["10.244.1.2"])])
    assert not any("30080" in r for r in cluster_only.nat.rules)


def test_service_without_ready_endpoints_is_rejected_in_the_filter_table() -> None:
    svc = service(type="NodePort", ports=[{"name": "http", "port": 80, "nodePort": 30080}])
    rules = build([svc], [endpoints(ips=[], not_ready=["10.244.1.2"])])
    assert not any(r.startswith(("-A CORRAL-SVC-", "-A CORRAL-SEP-")) for r in rules.nat.rules)
    assert rules.filter.rules == [
        ('-A CORRAL-SERVICES-FILTER -m comment --comment "default/web:http has no endpoints" '
        "-d 10.96.10.10/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with "
        "icmp-port-unreachable"),
        ('-A CORRAL-EXTERNAL-FILTER -m comment --comment "default/web:http has no endpoints" '
        "-m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30080 -j REJECT --reject-with "
        "icmp-port-unreachable"),
    ]


def test_ports_match_endpoints_by_name_and_protocol() -> None:
    svc = service(ports=[{"name": "http", "port": 80}, {"name": "dns", "port": 53,
                                                        "protocol": "UDP"}])
    ep = {"metadata": {"namespace": "default", "name": "web"},
          "subsets": [{"addresses": [{"ip": "10.244.1.2"}],
                       "ports": [{"name": "http", "port": 8080},
                                 {"name": "dns", "port": 5353, "protocol": "UDP"}]},
                      {"addresses": [{"ip": "10.244.2.2"}],
                       "ports": [{"name": "dns", "port": 5353, "protocol": "TCP"}]}]}
    rules = build([svc], [ep])
    dnat = sorted(r.split("--to-destination ")[1] for r in rules.nat.rules if "DNAT" in r)
    assert dnat == ["10.244.1.2:5353", "10.244.1.2:8080"]
    assert any("-p udp -m udp --dport 53" in r for r in rules.nat.rules)


def test_unchanged_input_gives_identical_text_in_any_order() -> None:
    services = [service("a", cluster_ip="10.96.0.11"), service("b", cluster_ip="10.96.0.12"),
                service("c", cluster_ip="10.96.0.13", ns="other")]
    eps = [endpoints("a", ["10.244.1.5", "10.244.1.4"]), endpoints("b", ["10.244.2.9"]),
           endpoints("c", ["10.244.3.3"], ns="other")]

    def text(svcs: list[Obj], e: list[Obj]) -> str:
        r = build(svcs, e, cluster_cidr="10.244.0.0/16")
        return restore_input("nat", r.nat) + restore_input("filter", r.filter)

    first = text(services, eps)
    assert text(services, eps) == first
    assert text(list(reversed(services)), list(reversed(eps))) == first
    assert text(services, eps[:1]) != first


def test_chain_names_fit_iptables() -> None:
    long = "x" * 63
    names = [svc_chain(f"{long}/{long}:{long}", "SCTP"),
             sep_chain(f"{long}/{long}:{long}", "UDP", "255.255.255.255:65535")]
    rules = build([service(long, ns=long)], [endpoints(long, ["10.244.1.2"], ns=long)])
    names += rules.nat.chains + rules.filter.chains
    assert all(len(name) <= MAX_CHAIN_LEN for name in names)
    assert svc_chain("a/b:c", "TCP") != svc_chain("a/b:c", "UDP")
    assert svc_chain("a/b:c", "TCP") == svc_chain("a/b:c", "TCP")


@pytest.mark.parametrize("bad", [
    {"spec": {"clusterIP": "None", "ports": [{"port": 80}]}},
    {"spec": {"clusterIP": "", "ports": [{"port": 80}]}},
    {"spec": {"clusterIP": "10.96.0.1; -j ACCEPT", "ports": [{"port": 80}]}},
    {"spec": {"clusterIP": "10.96.0.1", "ports": [{"port": "80"}, {"port": 0},
                                                  {"port": 80, "protocol": "ICMP"}, "x"]}},
    {"spec": None},
    {},
])
def test_malformed_services_are_skipped(bad: Obj) -> None:
    bad = {"metadata": {"namespace": "default", "name": "web"}, **bad}
    rules = build([bad], [endpoints(ips=["10.244.1.2", "not-an-ip", "10.244.1.3 -j X"])])
    assert not any(r.startswith("-A CORRAL-SVC-") for r in rules.nat.rules)
    assert rules.filter.rules == []


def test_restore_input_deletes_stale_chains() -> None:
    rules = build([service()], [endpoints(ips=["10.244.1.2"])])
    text = restore_input("nat", rules.nat, ["CORRAL-SEP-OLD", SEP1])
    assert ":CORRAL-SEP-OLD - [0:0]" in text
    assert text.endswith("-X CORRAL-SEP-OLD\nCOMMIT\n")
    assert f"-X {SEP1}" not in text


# -- the proxier over an in-process API, with the recording applier --------------------------

async def test_proxier_follows_services_and_endpoints(client: ApiClient) -> None:
    applier = RecordingApplier()
    proxier = Proxier(client, applier, debounce=0.05, resync=3600)
    task = asyncio.create_task(proxier.run())
    try:
        await asyncio.wait_for(proxier.synced.wait(), 10)
        svc = service(cluster_ip="10.96.10.10")
        svc["spec"]["ports"][0].pop("targetPort")
        await client.create(SERVICES, "default", svc)
        await client.create(ENDPOINTS, "default", endpoints(ips=["10.244.1.2"]))

        async def until(check: Any) -> None:
            for _ in range(200):
                if applier.applied and check(applier.applied[-1]):
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("the proxier did not apply the expected rules")

        await until(lambda r: any("--to-destination 10.244.1.2:8080" in x for x in r.nat.rules))
        calls = applier.calls
        await client.delete(ENDPOINTS, "default", "web")
        await until(lambda r: any("has no endpoints" in x for x in r.filter.rules))
        assert applier.calls - calls <= 3  # debounced, not one apply per event
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- LoadBalancer ingress IPs ----------------------------------------------------------------

EXT = ext_chain("default/web:http", "TCP")


def load_balancer(*ingress: Obj, **spec: Any) -> Obj:
    svc = service(type="LoadBalancer", ports=[{"name": "http", "port": 80, "protocol": "TCP",
                                               "nodePort": 30080}], **spec)
    svc["status"] = {"loadBalancer": {"ingress": list(ingress)}}
    return svc


def test_ingress_ips_mark_for_masquerade_and_jump_to_the_service() -> None:
    svc = load_balancer({"ip": "198.19.255.1", "ipMode": "VIP"}, {"ip": "198.19.255.2"})
    rules = build([svc], [endpoints(ips=["10.244.1.2"])], cluster_cidr="10.244.0.0/16")
    assert EXT in rules.nat.chains and len(EXT) <= MAX_CHAIN_LEN
    services = [r for r in rules.nat.rules if r.startswith("-A CORRAL-SERVICES ")]
    assert services[1:3] == [
        ('-A CORRAL-SERVICES -m comment --comment "default/web:http loadbalancer IP" '
         f"-d 198.19.255.1/32 -p tcp -m tcp --dport 80 -j {EXT}"),
        ('-A CORRAL-SERVICES -m comment --comment "default/web:http loadbalancer IP" '
         f"-d 198.19.255.2/32 -p tcp -m tcp --dport 80 -j {EXT}"),
    ]
    assert services[-1].endswith("-j CORRAL-NODEPORTS")  # still last
    assert [r for r in rules.nat.rules if r.startswith(f"-A {EXT} ")] == [
        (f'-A {EXT} -m comment --comment "masquerade traffic for default/web:http external '
         'destinations" -j CORRAL-MARK-MASQ'),
        f"-A {EXT} -j {SVC}",
    ]
    assert is_owned_chain(EXT) and EXT.startswith(OWNED_PREFIXES)


def test_ingress_ips_without_endpoints_are_rejected_for_outside_and_forwarded_traffic() -> None:
    rules = build([load_balancer({"ip": "198.19.255.1"})], [endpoints(ips=[])])
    assert EXT not in rules.nat.chains
    assert not any("198.19.255.1" in r for r in rules.nat.rules)
    assert ('-A CORRAL-EXTERNAL-FILTER -m comment --comment "default/web:http has no '
            'endpoints" -d 198.19.255.1/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with '
            "icmp-port-unreachable") in rules.filter.rules
    into_external = [(table, builtin) for table, builtin, args in JUMPS
                     if args[-1] == "CORRAL-EXTERNAL-FILTER"]
    assert into_external == [("filter", "INPUT"), ("filter", "FORWARD")]


@pytest.mark.parametrize("svc", [
    load_balancer({"ip": "198.19.255.1", "ipMode": "Proxy"}),  # the balancer rewrites it
    load_balancer({"hostname": "lb.example.com"}, {"ip": "fd00::1"}, {"ip": "1.2.3.4 -j X"}),
    {**load_balancer({"ip": "198.19.255.1"}), "spec": {**load_balancer()["spec"],
                                                       "type": "NodePort"}},
    {**load_balancer(), "status": {"loadBalancer": {"ingress": "198.19.255.1"}}},
    {**load_balancer(), "status": None},
])
def test_ingress_entries_that_are_not_proxied(svc: Obj) -> None:
    rules = build([svc], [endpoints(ips=["10.244.1.2"])])
    assert not [c for c in rules.nat.chains if c.startswith("CORRAL-EXT-")]
    assert len([r for r in rules.nat.rules if r.startswith("-A CORRAL-SERVICES ")]) == 2

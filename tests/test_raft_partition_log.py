"""How a follower's log answers the leader's appends, message by message, without a network.

Deterministic counterparts of tests/test_raft_partition.py: a ``_Replica`` whose peers never
answer is fed ``append_entries`` through the same message callback pysyncobj's transport
calls, and the replies it sends are recorded. They pin the two follower bugs fixed by
``_truncate_only_at_conflicts`` in raftstore/raft.py: the leader bouncing forever between
"conflict at i" and "beyond my end, i+1", and a stale append deleting applied entries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftstore.localprocess import free_ports
from raftstore.raft import RaftConfig, _Replica

NO_OP = b"\x01"  # pysyncobj's _COMMAND_TYPE.NO_OP: applying it changes nothing


class Follower:
    def __init__(self, replica: _Replica) -> None:
        self.replica = replica
        self.transport = replica._SyncObj__transport  # type: ignore[attr-defined]
        self.leader = next(iter(replica.otherNodes))
        self.replies: list[dict[str, Any]] = []
        self.transport.send = lambda node, message: self.replies.append(message) or True

    @property
    def journal(self) -> Any:
        return self.replica._SyncObj__raftLog  # type: ignore[attr-defined]

    @property
    def log(self) -> list[tuple[int, int]]:
        """(index, term) of every entry held."""
        return [(e[1], e[2]) for e in self.journal[:]]

    def append(self, term: int, prev: int, prev_term: int, entries: list[tuple[int, int]],
               commit: int = 0) -> dict[str, Any]:
        self.replies.clear()
        self.transport._onMessageReceivedCallback(self.leader, {
            "type": "append_entries", "term": term, "commit_index": commit,
            "prevLogIdx": prev, "prevLogTerm": prev_term,
            "entries": [(NO_OP, i, t) for i, t in entries],
        })
        replies = [r for r in self.replies if r.get("type") == "next_node_idx"]
        assert len(replies) == 1, self.replies
        return replies[0]


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[Follower]:
    own, peer = free_ports(2)
    config = RaftConfig(address=f"127.0.0.1:{own}", peers=[f"127.0.0.1:{peer}"],
                        data_dir=tmp_path, secret="s" * 16)
    replica = _Replica(config, threading.Lock(), lambda: None)
    try:
        yield Follower(replica)
    finally:
        replica.destroy()


def test_deposed_leader_tail_is_replaced_despite_pipelined_appends(follower: Follower) -> None:
    # The old leader (term 1) holds 2..6; only 2..3 made it to the new leader (term 2), whose
    # log continues 4..40 in term 2. The new leader pipelines bursts of 5 entries a message
    # from its nextIndex and applies the replies in order, as pysyncobj does.
    follower.append(1, 1, 0, [(i, 1) for i in range(2, 7)])
    leader_log = {1: 0, 2: 1, 3: 1, **{i: 2 for i in range(4, 41)}}
    next_index = 41
    for _ in range(20):
        replies = []
        start = next_index
        while start <= 41:
            prev = start - 1
            entries = [(i, leader_log[i]) for i in range(start, min(start + 5, 41))]
            if prev in leader_log:
                replies.append(follower.append(2, prev, leader_log[prev], entries))
            start += 5
        for reply in replies:
            if reply["reset"] or reply["success"]:
                next_index = reply["next_node_idx"]
        if follower.log == sorted(leader_log.items()):
            break
    assert follower.log == sorted(leader_log.items())


def test_conflict_answers_agree_within_a_burst(follower: Follower) -> None:
    follower.append(1, 1, 0, [(i, 1) for i in range(2, 7)])
    conflict = follower.append(2, 6, 2, [(7, 2)])
    beyond = follower.append(2, 11, 2, [(12, 2)])
    assert conflict["reset"] and beyond["reset"]
    assert beyond["next_node_idx"] <= conflict["next_node_idx"] == 6


def test_stale_append_keeps_acknowledged_and_applied_entries(
        follower: Follower, caplog: pytest.LogCaptureFixture) -> None:
    entries = [(i, 1) for i in range(2, 11)]
    assert follower.append(1, 1, 0, entries, commit=8)["next_node_idx"] == 11
    follower.replica.doTick(0.0)  # applies 2..8
    assert follower.replica.raftLastApplied == 8
    with caplog.at_level(logging.CRITICAL, logger="pysyncobj"):
        # A late copy of an earlier append (prevLogIdx 3), and a heartbeat from a lowered
        # nextIndex: both must leave 4..10 in place.
        stale = follower.append(1, 3, 1, [(4, 1), (5, 1)], commit=8)
        heartbeat = follower.append(1, 6, 1, [], commit=8)
    assert follower.log[-1] == (10, 1)
    assert stale["success"] and heartbeat["success"]
    assert stale["next_node_idx"] >= 6 and heartbeat["next_node_idx"] >= 7
    assert not [r for r in caplog.records if r.levelno >= logging.CRITICAL]


def test_conflict_after_matching_entries_still_replaces_the_tail(follower: Follower) -> None:
    follower.append(1, 1, 0, [(i, 1) for i in range(2, 8)])
    reply = follower.append(2, 3, 1, [(4, 1), (5, 2), (6, 2)])
    assert reply["success"] and reply["next_node_idx"] == 7
    assert follower.log == [(1, 0), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2)]


def test_a_snapshot_message_never_commits_the_followers_own_tail(follower: Follower) -> None:
    # A deposed leader (term 1) holds 2..10, of which 2..5 are committed; 6..10 never were.
    # Its successor (term 2) starts sending it a snapshot: those messages carry no
    # prevLogIdx, so they prove nothing about 6..10 and must not commit or apply them.
    follower.append(1, 1, 0, [(i, 1) for i in range(2, 11)], commit=5)
    follower.replica.doTick(0.0)
    assert (follower.replica.raftCommitIndex, follower.replica.raftLastApplied) == (5, 5)
    transport = follower.transport
    for _ in range(3):  # chunks of a transfer the serializer has not started yet
        transport._onMessageReceivedCallback(follower.leader, {
            "type": "append_entries", "term": 2, "commit_index": 40, "serialized": None})
        follower.replica.doTick(0.0)
    assert follower.replica.raftCurrentTerm == 2
    assert (follower.replica.raftCommitIndex, follower.replica.raftLastApplied) == (5, 5)
    # The leader's log shares 2..5 and continues in term 2: a matching append commits again.
    follower.append(2, 5, 1, [(i, 2) for i in range(6, 12)], commit=40)
    follower.replica.doTick(0.0)
    assert follower.log[5:] == [(i, 2) for i in range(6, 12)]
    assert follower.replica.raftCommitIndex == 11

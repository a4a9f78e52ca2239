"""The ZooKeeper the project deploys (deploy/zookeeper/zookeeper.sh), seen through kazoo: the test
run's single node serves and ends an ephemeral node with its session; the three-node ensemble keeps
a client's session and its writes going while the member it was connected to is SIGKILLed."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient, KazooState
from kazoo.protocol.states import ZnodeStat

from tests.zookeeper_fixtures import ZooKeeperEnsemble, connected_member, zk_root, zookeeper_script

# Reconnect quickly (the default backs off up to an hour): a member that is down is skipped at once,
# one that has no quorum yet is tried again within a second.
FAST_RECONNECT = {"max_tries": -1, "delay": 0.1, "backoff": 1.5, "max_delay": 1.0}
SESSION_TIMEOUT = 10.0


def new_client(hosts: str) -> KazooClient:
    return KazooClient(hosts=hosts, timeout=SESSION_TIMEOUT, connection_retry=dict(FAST_RECONNECT))


@contextlib.contextmanager
def connected(hosts: str) -> Iterator[KazooClient]:
    client = new_client(hosts)
    client.start(timeout=15)
    try:
        yield client
    finally:
        client.stop()
        client.close()


def test_single_node_serves_and_an_ephemeral_node_ends_with_its_session(zookeeper_node: str) -> None:
    root = zk_root()
    path = f"{root}/owner"
    with connected(zookeeper_node) as observer:
        owner = new_client(zookeeper_node)
        owner.start(timeout=15)
        try:
            owner.create(path, b"owner", ephemeral=True, makepath=True)
            session_id = owner.client_id[0]
            present, gone = threading.Event(), threading.Event()

            def watch(data: bytes | None, stat: ZnodeStat | None) -> None:
                if stat is None:
                    gone.set()
                elif data == b"owner" and stat.ephemeralOwner == session_id:
                    present.set()

            observer.DataWatch(path, watch)
            assert present.wait(10), "the second client does not see the ephemeral node"
            assert not gone.is_set()
        finally:
            owner.stop()
            owner.close()  # ends the session: the server deletes its ephemeral nodes
        assert gone.wait(10), "the ephemeral node outlived its session"
        assert observer.exists(path) is None
        observer.delete(root, recursive=True)


def test_status_exits_zero_while_the_node_runs(zookeeper_node: str) -> None:
    if os.environ.get("LEGATO_TEST_ZOOKEEPER"):
        pytest.skip("LEGATO_TEST_ZOOKEEPER names a node the script does not run")
    r = zookeeper_script("status")
    assert r.returncode == 0, r.stderr


def test_ensemble_keeps_the_session_through_the_loss_of_a_member(zookeeper_ensemble: ZooKeeperEnsemble) -> None:
    ensemble = zookeeper_ensemble
    assert ensemble.serving() == [1, 2, 3]
    root = zk_root()
    owner_path = f"{root}/owner"
    states: list[Any] = []
    suspended, reconnected, lost = threading.Event(), threading.Event(), threading.Event()

    def listener(state: Any) -> None:  # kazoo's connection thread: record, never block
        states.append(state)
        if state == KazooState.SUSPENDED:
            suspended.set()
        elif state == KazooState.LOST:
            lost.set()
        elif state == KazooState.CONNECTED and suspended.is_set():
            reconnected.set()

    client = new_client(ensemble.hosts)
    client.add_listener(listener)
    client.start(timeout=15)
    try:
        client.create(owner_path, b"before", ephemeral=True, makepath=True)
        session = client.client_id
        victim = connected_member(ensemble, client)
        ensemble.kill(victim)
        try:
            assert suspended.wait(10), f"the client did not notice its member die: {states}"
            assert reconnected.wait(30), f"the client did not reconnect to the other members: {states}"
            assert not lost.is_set(), f"the session was lost: {states}"
            assert client.client_id == session
            assert connected_member(ensemble, client) != victim
            # The two members left are a quorum: writes go on, in the same session.
            client.set(owner_path, b"after")
            client.create(f"{root}/written-while-{victim}-was-down", b"")
            with connected(ensemble.hosts) as observer:
                observer.sync(root)  # its member may lag the leader: catch up before reading
                data, stat = observer.get(owner_path)
                assert (data, stat.ephemeralOwner) == (b"after", session[0])
                assert observer.exists(f"{root}/written-while-{victim}-was-down") is not None
        finally:
            ensemble.start(victim)
        assert ensemble.serving() == [1, 2, 3]
        assert zookeeper_script("ensemble", "status").returncode == 0
        assert not lost.is_set()
        client.delete(root, recursive=True)
    finally:
        client.stop()
        client.close()

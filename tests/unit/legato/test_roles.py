"""Which roles a process may run with which config (legato/roles.py), and the cluster addresses."""

from __future__ import annotations

import pytest

from legato.config import ClusterConfig, Config, ConfigError, QueuesConfig, load_config, split_address
from legato.roles import ALL_ROLES, check_roles, parse_roles, role_address, role_list


def test_roles_parse_in_any_order_and_list_in_the_usual_one() -> None:
    roles = parse_roles(" matching,frontend ")
    assert roles == {"matching", "frontend"}
    assert role_list(roles) == "frontend,matching"
    assert parse_roles("history,matching,frontend") == ALL_ROLES


@pytest.mark.parametrize("text", ["", ",", "history,scheduler"])
def test_unknown_or_no_roles_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="frontend,history,matching"):
        parse_roles(text)


def test_history_and_matching_apart_need_kafka() -> None:
    with pytest.raises(ConfigError, match=r"history without matching .* queues\.kind: kafka"):
        check_roles(frozenset({"history"}), Config(), "x.db")
    with pytest.raises(ConfigError, match=r"frontend,matching without history .* queues\.kind: kafka"):
        check_roles(frozenset({"matching", "frontend"}), Config(), "x.db")
    check_roles(frozenset({"history"}), Config(queues=QueuesConfig(kind="kafka")), None)
    # together, the in-process bus is fine; a frontend uses no queues
    check_roles(ALL_ROLES, Config(), None)
    check_roles(frozenset({"history", "matching"}), Config(), None)
    check_roles(frozenset({"frontend"}), Config(), "x.db")


def test_a_lone_frontend_on_sqlite_needs_the_history_file() -> None:
    kafka = Config(queues=QueuesConfig(kind="kafka"))
    with pytest.raises(ConfigError, match="--db"):
        check_roles(frozenset({"frontend"}), kafka, None)
    check_roles(frozenset({"frontend"}), kafka, "legato.db")
    check_roles(frozenset({"frontend", "history"}), kafka, None)


def test_cluster_addresses_default_and_come_from_the_environment() -> None:
    c = load_config(env={"LEGATO_CLUSTER__MATCHING_ADDRESS": "10.0.0.7:9000"})
    assert role_address(c, "frontend") == "127.0.0.1:7233"
    assert role_address(c, "history") == "127.0.0.1:7234"
    assert role_address(c, "matching") == "10.0.0.7:9000"
    assert split_address("10.0.0.7:9000") == ("10.0.0.7", 9000)
    assert split_address("[::1]:7234") == ("::1", 7234)


@pytest.mark.parametrize("bad", ["localhost", "host:", ":7234", "a b:1"])
def test_an_address_without_host_and_port_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="history_address"):
        ClusterConfig(history_address=bad)


def test_a_cluster_member_with_history_or_matching_needs_kafka() -> None:
    zk = ClusterConfig(zookeeper_hosts="127.0.0.1:2181")
    for roles in ({"history"}, {"matching"}, {"history", "matching", "frontend"}):
        with pytest.raises(ConfigError, match=r"in a cluster \(--zookeeper\).*queues\.kind: kafka"):
            check_roles(frozenset(roles), Config(cluster=zk), "x.db")
    check_roles(frozenset({"frontend"}), Config(cluster=zk), "x.db")  # a frontend uses no queues
    check_roles(ALL_ROLES, Config(cluster=zk, queues=QueuesConfig(kind="kafka")), None)


@pytest.mark.parametrize(("field", "bad", "says"), [
    ("zookeeper_hosts", "a b:2181", "zookeeper_hosts"),
    ("zookeeper_hosts", "h1:2181,,h2:2181", "zookeeper_hosts"),
    ("zookeeper_root", "legato", "zookeeper_root"),
    ("zookeeper_root", "/legato/", "zookeeper_root"),
    ("zookeeper_session_timeout_ms", 500, "greater than or equal to 1000"),
    ("zookeeper_session_timeout_ms", 120_000, "less than or equal to 60000"),
    ("route_timeout_ms", 0, "greater than 0"),
    ("shard_acquire_concurrency", 0, "greater than 0"),
    ("advertise_host", "a b", "advertise_host"),
    ("advertise_host", "10.0.0.5:7234", "advertise_host"),  # a host, not an address
])
def test_bad_cluster_settings_are_refused_naming_the_key(field: str, bad: object, says: str) -> None:
    with pytest.raises(ConfigError, match=rf"cluster\.{field}: .*{says}|{says}"):
        load_config(env={f"LEGATO_CLUSTER__{field.upper()}": str(bad)})

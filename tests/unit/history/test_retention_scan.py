"""The retention scan (history/retention_scan.py): closed runs that no retention timer deletes
(they closed while retention was 0) are deleted once their retention has passed, by a paced,
resumable, idempotent walk over each shard's runs. On SQLite and on the real Cassandra node
(`history_store`): the runs are made by a first history service with retention 0 and scanned by
a second one, started on the same store with retention set."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from history import retention_scan
from history.retention_scan import CURSOR_KEY, RetentionScan, ScanPosition
from legato.api import ExecutionRef, StartWorkflowRequest, TerminateWorkflowRequest
from legato.config import ConfigError, load_config
from legato.errors import NotFound, Unavailable
from tests.unit.history.conftest import T0, Env, FakeClock, close_env, make_config, make_env

HOUR = 3_600_000
SCAN_OFF = {"retention_scan_interval": 0}  # no background passes: the tests run them


async def _closed_runs(db: str, workflows: list[tuple[str, str]], open_ids: tuple[str, ...] = (),
                       shards: int = 2) -> dict[str, str]:
    """Runs closed at T0 by a history service with retention 0 (so no deletion timer), and open
    ones; workflow id -> run id."""
    env = await make_env(db, make_config(num_shards=shards, retention=0, **SCAN_OFF), clock=FakeClock(T0))
    runs: dict[str, str] = {}
    try:
        for ns, wf in workflows + [("default", w) for w in open_ids]:
            started = await env.history.start_workflow(StartWorkflowRequest(wf, "app:order", "q", namespace=ns))
            runs[wf] = started.run_id
            if wf not in open_ids:
                await env.history.terminate_workflow(TerminateWorkflowRequest(ExecutionRef(wf, namespace=ns)))
        await env.settle()
    finally:
        await close_env(env)
    return runs


async def _exists(env: Env, wf: str, run_id: str, ns: str = "default") -> bool:
    try:
        await env.history.describe_workflow(ExecutionRef(wf, run_id, ns))
    except NotFound:
        sid = env.history.shard_for(ns, wf)
        assert await env.store.get_run(sid, ns, wf, run_id) is None
        return False
    return True


async def _scan_all(env: Env) -> tuple[int, int]:
    """One pass over every shard from where each stopped: (examined, deleted)."""
    examined = deleted = 0
    for sid in range(env.config.history.num_shards):
        scan = env.history.retention_scan(sid)
        pos = ScanPosition.decode(await env.store.get_metadata(CURSOR_KEY.format(shard=sid)))
        summary = await scan.one_pass(pos)
        examined, deleted = examined + summary.examined, deleted + summary.deleted
    return examined, deleted


async def test_runs_closed_while_retention_was_zero_are_deleted_by_the_scan(history_store: str,
                                                                           tmp_path: Path) -> None:
    db = str(tmp_path / "h.db")
    runs = await _closed_runs(db, [("default", "old1"), ("default", "old2"), ("keep", "kept")], ("open",))
    # Retention 1 h, no grace: at T0 + 1 h the closed runs of "default" are due; "keep" keeps for ever.
    cfg = make_config(retention="1h", namespace_retention={"keep": 0}, retention_scan_grace=0, **SCAN_OFF)
    env = await make_env(db, cfg, clock=FakeClock(T0 + HOUR - 1))
    try:
        assert await _scan_all(env) == (4, 0)  # not yet due: nothing deleted
        env.clock.advance(1)
        assert await _scan_all(env) == (4, 2)
        assert not await _exists(env, "old1", runs["old1"]) and not await _exists(env, "old2", runs["old2"])
        assert await _exists(env, "kept", runs["kept"], "keep") and await _exists(env, "open", runs["open"])
        assert await _scan_all(env) == (2, 0)  # again: nothing more to do
    finally:
        await close_env(env)


async def test_a_run_past_retention_is_left_to_its_timer_during_the_grace(history_store: str,
                                                                         tmp_path: Path) -> None:
    db = str(tmp_path / "h.db")
    runs = await _closed_runs(db, [("default", "wf")])
    env = await make_env(db, make_config(retention="1h", retention_scan_grace="30m", **SCAN_OFF),
                         clock=FakeClock(T0 + HOUR + 30 * 60_000 - 1))
    try:
        assert await _scan_all(env) == (1, 0)
        env.clock.advance(1)
        assert await _scan_all(env) == (1, 1)
        assert not await _exists(env, "wf", runs["wf"])
    finally:
        await close_env(env)


async def test_a_pass_cut_short_resumes_after_the_last_page_it_finished(history_store: str, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of 2: a pass that fails on the 4th run has recorded the position after the 2nd; the
    next pass starts there (the 3rd run, deleted before the failure, is gone: it examines the
    last 2)."""
    monkeypatch.setattr(retention_scan, "SCAN_PAGE", 2)
    db = str(tmp_path / "h.db")
    wfs = [("default", f"wf{i}") for i in range(5)]
    cfg = make_config(num_shards=1, retention="1h", retention_scan_grace=0, **SCAN_OFF)
    await _closed_runs(db, wfs, shards=1)
    env = await make_env(db, cfg, clock=FakeClock(T0 + 2 * HOUR))
    try:
        real = env.history.retention_scan(0)
        calls: list[str] = []

        async def failing_delete(ns: str, wf: str, run_id: str, start_ms: int) -> bool:
            calls.append(wf)
            if len(calls) == 4:
                raise Unavailable("the store went away")
            return await env.history.delete_closed_run(env.history._shards[0], ns, wf, run_id, start_ms)

        scan = RetentionScan(0, env.store, cfg.history, env.clock, failing_delete)
        with pytest.raises(Unavailable):
            await scan.one_pass(ScanPosition())
        stored = ScanPosition.decode(await env.store.get_metadata(CURSOR_KEY.format(shard=0)))
        assert stored.after is not None and stored.after[1] == calls[1]  # after the first page
        summary = await real.one_pass(stored)
        assert (summary.examined, summary.deleted) == (2, 2)
        assert await _scan_all(env) == (0, 0)  # the pass ended: the next starts from the first run
        for _, wf in wfs:
            with pytest.raises(NotFound):
                await env.history.describe_workflow(ExecutionRef(wf))
    finally:
        await close_env(env)


async def test_the_pass_is_paced_by_the_configured_rate(history_store: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """6 runs in pages of 2 at 20 runs/s: the two pages before the last wait 0.1 s each."""
    monkeypatch.setattr(retention_scan, "SCAN_PAGE", 2)
    db = str(tmp_path / "h.db")
    await _closed_runs(db, [("default", f"wf{i}") for i in range(6)], shards=1)
    env = await make_env(db, make_config(num_shards=1, retention=0, retention_scan_rate=20, **SCAN_OFF))
    try:
        started = time.monotonic()
        summary = await env.history.retention_scan(0).one_pass(ScanPosition())
        assert summary.examined == 6 and time.monotonic() - started >= 0.2
    finally:
        await close_env(env)


class WallClock(FakeClock):
    def __call__(self) -> int:
        return int(time.time() * 1000)


async def test_the_owner_scans_its_shards_by_itself(history_store: str, tmp_path: Path) -> None:
    """With the interval set, acquiring a shard starts its passes: the runs go without a call."""
    db = str(tmp_path / "h.db")
    runs = await _closed_runs(db, [("default", "a"), ("default", "b")])
    env = await make_env(db, make_config(retention="1ms", retention_scan_grace=0, retention_scan_interval="1d"),
                         clock=WallClock())
    try:
        deadline = time.monotonic() + 30.0
        while await _exists(env, "a", runs["a"]) or await _exists(env, "b", runs["b"]):
            assert time.monotonic() < deadline, "the retention scan did not delete the runs within 30 s"
            await asyncio.sleep(0.05)
    finally:
        await close_env(env)


def test_retention_scan_configuration() -> None:
    h = make_config().history
    assert (h.retention_scan_interval, h.retention_scan_rate, h.retention_scan_grace) == (24 * HOUR, 200.0, HOUR)
    c = load_config(None, {"LEGATO_HISTORY__RETENTION_SCAN_INTERVAL": "6h",
                           "LEGATO_HISTORY__RETENTION_SCAN_GRACE": "0"})
    assert (c.history.retention_scan_interval, c.history.retention_scan_grace) == (6 * HOUR, 0)


@pytest.mark.parametrize(("env_vars", "message"), [
    ({"LEGATO_HISTORY__RETENTION_SCAN_INTERVAL": "daily"}, "history.retention_scan_interval: .*'daily' is not"),
    ({"LEGATO_HISTORY__RETENTION_SCAN_GRACE": "-1"}, "history.retention_scan_grace: .*"),
    ({"LEGATO_HISTORY__RETENTION_SCAN_RATE": "0"}, "history.retention_scan_rate: .*greater than 0"),
])
def test_invalid_retention_scan_settings_are_refused_naming_the_key(env_vars: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, env_vars)


def test_an_unreadable_position_starts_a_pass_from_the_first_run(caplog: Any) -> None:
    assert ScanPosition.decode("{not json") == ScanPosition()
    assert "unreadable position" in caplog.text
    pos = ScanPosition(("ns", "wf", "r"), 5)
    assert ScanPosition.decode(pos.encode()) == pos

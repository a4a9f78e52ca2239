"""How `legato bench cassandra-profile` files a sample: by the first category with a marker in its
stack (the recording itself: tests/integration/test_cassandra_profile.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from legato.cassandra_profile import (
    ENDED,
    NO_SAMPLE,
    OTHER,
    REQUEST_THREADS,
    Profile,
    classify,
    group_deltas,
    thread_group,
)


def _stack(thread: str, *frames: str) -> str:
    return f'  sampledThread = "{thread}" (javaThreadId = 1)\n  stackTrace = [\n' + "".join(
        f"    {f}() line: 1\n" for f in frames) + "  ]\n"


def test_a_paxos_commit_applying_its_mutation_is_the_lwt_s():
    s = _stack("MutationStage-2", "org.apache.cassandra.db.memtable.SkipListMemtable.put",
               "org.apache.cassandra.db.Keyspace.apply",
               "org.apache.cassandra.service.paxos.PaxosCommit$RequestHandler.doVerb")
    assert classify(s) == "LWT: Paxos commit, applying the batch"


def test_a_flush_building_sai_segments_is_the_flush_s():
    s = _stack("PerDiskMemtableFlushWriter_0:1", "org.apache.cassandra.index.sai.disk.v1.trie.LiteralIndexWriter.write",
               "org.apache.cassandra.db.memtable.Flushing$FlushRunnable.call")
    assert classify(s) == "memtable flush (and its SAI index segments)"


def test_an_index_update_of_a_write_is_the_index_s_and_a_plain_batch_a_write():
    index = _stack("MutationStage-1", "org.apache.cassandra.index.sai.memory.TrieMemoryIndex.add",
                   "org.apache.cassandra.db.Keyspace.apply")
    batch = _stack("Native-Transport-Requests-3", "org.apache.cassandra.cql3.statements.BatchStatement.getMutations",
                   "org.apache.cassandra.transport.Dispatcher.processRequest")
    assert classify(index) == "SAI index updates (visibility)"
    assert classify(batch) == "writes: batches and single writes (history, visibility)"


def test_a_stack_with_no_marker_is_other():
    assert classify(_stack("JFR Periodic Tasks", "jdk.jfr.internal.Utils.getHandler")) == OTHER


def test_request_threads_are_one_group_whatever_stage_they_are_named_for():
    assert thread_group("MutationStage-12") == thread_group("Native-Transport-Requests-3") == REQUEST_THREADS
    assert thread_group("C2 CompilerThread0") == "JIT compiler"
    assert thread_group("ScheduledTasks:1") == "ScheduledTasks"


def test_each_group_s_cpu_is_split_by_its_own_samples():
    p = Profile(seconds=10, cpu_s=20.0, group_cpu_s={REQUEST_THREADS: 8.0, "compaction": 2.0, "JIT compiler": 4.0,
                                                    "Sweeper thread": 0.05, "VM Periodic Tas": 0.05},
                samples={REQUEST_THREADS: Counter({"a": 1, "b": 3}), "compaction": Counter({"c": 50})})
    split = p.category_cpu_s()
    # 50 compaction samples stand for its 2 s only; the JIT, which no sample saw, as it is;
    # the 5.9 s no live thread accounts for went to threads that ended; small groups are one row
    assert split == pytest.approx({"b": 6.0, ENDED: 5.9, f"{NO_SAMPLE}: JIT compiler": 4.0, "a": 2.0, "c": 2.0,
                                   f"{NO_SAMPLE}: others": 0.1})
    assert next(iter(split)) == "b" and p.total_samples == 54
    assert p.to_json()["categories"]["b"] == {"cpu_s": 6.0, "share": 0.3}


def test_window_cpu_counts_new_threads_whole_and_renamed_request_threads_in_their_group():
    before = {1: ("MutationStage-1", 5.0), 2: ("CompactionExecu", 1.0), 3: ("C2 CompilerThre", 9.0)}
    after = {1: ("Native-Transpor", 7.5), 2: ("CompactionExecu", 1.0), 4: ("ReadStage-2", 0.5)}
    # thread 1 moved to another stage (2.5 s), thread 4 started in the window (0.5 s), thread 2
    # did nothing, thread 3 ended (its CPU is the profile's "ended" remainder)
    assert group_deltas(before, after) == {REQUEST_THREADS: 3.0}

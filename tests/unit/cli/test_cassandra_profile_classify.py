"""How `legato bench cassandra-profile` files a sample: by the first category with a marker in its
stack (the recording itself: tests/integration/test_cassandra_profile.py)."""

from __future__ import annotations

from legato.cassandra_profile import OTHER, classify


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

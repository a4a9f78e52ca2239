"""`legato bench cassandra-profile`: what the Cassandra JVM's CPU is spent on while something runs
against it (a `legato load` run on a cluster, a bench, an application), from a Java Flight
Recorder recording of the node.

For `--seconds`, the node records with JFR (`jcmd PID JFR.start`, the JDK's own profiler: it samples
the threads running Java code every 10-20 ms at about 1% of overhead) and its CPU time is read from
its pid (psutil), with the CPU of its threads by name. The garbage collector, the JIT compiler and
the commit log's writer are shown apart, from their threads' CPU (`APART`: the first two run no Java
code, the writer mostly waits on fdatasync). Each other execution sample is put in the first
`CATEGORIES` entry one of whose markers is in its stack (`jfr print`, the whole stack); a
category's share of those samples times the CPU of the rest of the node is its CPU.

Why by stack and not by request: Cassandra hands a request from thread to thread (a conditional
batch's Paxos rounds, a write's mutation), so a thread's name says little; the frames say what
the work is for (a Paxos round, an index, a flush). The requests the store sends, by kind, are
counted by `legato bench cassandra-cost` and by the history nodes' `legato_cassandra_requests_total`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from legato.bench import BenchError
from legato.bench_cassandra import BACKGROUND_THREADS, cpu_s, thread_cpu

STACK_DEPTH = 512  # frames kept per sample (jfr print's default is 5: too few to see what a request is for)
JCMD_TIMEOUT_S = 60.0  # a jcmd call (JFR start or stop) answers within this long
RECORDING = "legato-profile"  # the JFR recording's name on the node

# category -> markers (substrings of a frame or of the thread's name); a sample is in the first
# category with a marker in its stack. The order matters: a Paxos commit applies its mutation
# (a write), a flush builds the SAI indexes of what it writes.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("LWT: Paxos prepare, reading the conditions", ("paxos.PaxosPrepare",)),
    ("LWT: Paxos propose", ("paxos.PaxosPropose",)),
    ("LWT: Paxos commit, applying the batch", ("paxos.PaxosCommit",)),
    ("LWT: coordinator (conditions, Paxos state)", ("service.paxos.", "executeWithConditions",
                                                    "StorageProxy.cas(")),
    ("memtable flush (and its SAI index segments)", ("ColumnFamilyStore$Flush", ".memtable.Flushing",
                                                     "\"MemtableFlushWriter", "\"PerDiskMemtableFlush")),
    ("compaction", (".db.compaction.", "\"CompactionExecutor")),
    ("SAI index updates (visibility)", (".index.sai.",)),
    ("writes: batches and single writes (history, visibility)", ("cql3.statements.BatchStatement",
                                                                 "cql3.statements.ModificationStatement",
                                                                 "db.Keyspace.apply", "db.Mutation")),
    ("reads", ("db.ReadCommand", "db.SinglePartitionReadCommand", "cql3.statements.SelectStatement",
               "db.PartitionRangeReadCommand")),
    ("commit log", (".db.commitlog.",)),
    ("thread pools spinning for work", ("SEPWorker.doWaitSpin",)),
    ("network and protocol", (".transport.", "io.netty.", ".cassandra.net.")),
]
OTHER = "other"
# Thread groups whose CPU is read per thread and shown apart: the JIT compiler and the garbage
# collector run no Java code (no sample sees them), the commit log's writer mostly waits on
# fdatasync and compresses natively (its few samples would stand for far too little).
APART = ("commit log", "JIT compiler", "garbage collection")
_APART_PREFIXES = tuple(f'"{prefix}' for prefix, group in BACKGROUND_THREADS.items() if group in APART)


@dataclass
class Profile:
    seconds: float  # the window's wall time
    cpu_s: float  # the JVM's CPU over the window (user + system)
    samples: Counter[str] = field(default_factory=Counter)  # category -> execution samples
    threads_s: Counter[str] = field(default_factory=Counter)  # background thread group -> CPU seconds

    @property
    def total_samples(self) -> int:
        return sum(self.samples.values())

    def java_cpu_s(self) -> float:
        """The CPU the samples stand for: all of it less the threads shown apart (`APART`)."""
        return max(self.cpu_s - sum(self.threads_s[g] for g in APART), 0.0)

    def category_cpu_s(self) -> dict[str, float]:
        n = self.total_samples
        java = self.java_cpu_s()
        return {c: java * k / n for c, k in self.samples.most_common()} if n else {}

    def to_json(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "cpu_s": round(self.cpu_s, 3), "samples": self.total_samples,
                "categories": {c: {"samples": self.samples[c], "share": round(self.samples[c] / self.total_samples, 4),
                                   "cpu_s": round(s, 3)} for c, s in self.category_cpu_s().items()},
                "threads_cpu_s": {g: round(s, 3) for g, s in self.threads_s.most_common()}}

    def text(self) -> str:
        n = self.total_samples
        lines = [f"Cassandra JVM: {self.cpu_s:.1f} s of CPU in {self.seconds:.1f} s "
                 f"({self.cpu_s / self.seconds:.2f} cores); {n} execution samples",
                 "Java code, by what the stack shows it is for:"]
        for c, s in self.category_cpu_s().items():
            lines.append(f"  {self.samples[c] / n * 100:5.1f}%  {s:7.1f} s  {c}")
        lines.append("Threads by name (CPU seconds over the window; " + ", ".join(APART) + " not in the split above):")
        for g, s in self.threads_s.most_common():
            lines.append(f"  {s:7.1f} s  {g}")
        return "\n".join(lines)


def classify(stack: str) -> str:
    """The category of one sample (`stack`: its thread line and frames, as `jfr print` shows them)."""
    for name, markers in CATEGORIES:
        if any(m in stack for m in markers):
            return name
    return OTHER


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"`{name}` (the JDK's) is not on PATH: bench cassandra-profile records the node with "
                         "Java Flight Recorder and needs the JDK that runs it (deploy/cassandra/cassandra.sh "
                         "installs Java 17)")
    return path


async def _run(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), JCMD_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        raise BenchError(f"`{' '.join(args[:3])} ...` did not answer in {JCMD_TIMEOUT_S:.0f} s") from None
    text = out.decode(errors="replace")
    if proc.returncode != 0 or "Could not" in text or "Exception" in text:
        raise BenchError(f"`{' '.join(args[:3])} ...` failed (exit {proc.returncode}): {text.strip()[:500]}")
    return text


def check_jvm(proc: psutil.Process) -> None:
    """Refuse a process that is no JVM: jcmd asks its target to attach with SIGQUIT, which ends
    most other programs."""
    try:
        exe = Path(proc.exe()).name if proc.exe() else proc.name()
    except psutil.Error as e:
        raise BenchError(f"cannot read what process {proc.pid} runs: {e}") from None
    if exe != "java":
        raise BenchError(f"process {proc.pid} runs {exe!r}, not a Java virtual machine: give the Cassandra "
                         "node's pid (--pid) or its pidfile (--pidfile)")


async def record(proc: psutil.Process, seconds: float, jfr_path: Path) -> Profile:
    """Record the JVM for `seconds` into `jfr_path`; the CPU and thread times of the window."""
    check_jvm(proc)
    jcmd = _tool("jcmd")
    _tool("jfr")
    pid = str(proc.pid)
    await _run(jcmd, pid, "JFR.start", f"name={RECORDING}", "settings=profile")
    try:
        t0, c0, th0 = time.monotonic(), cpu_s(proc), thread_cpu(proc)
        await asyncio.sleep(seconds)  # the measurement window itself, not a wait for anything
        t1, c1, th1 = time.monotonic(), cpu_s(proc), thread_cpu(proc)
    finally:
        await _run(jcmd, pid, "JFR.stop", f"name={RECORDING}", f"filename={jfr_path}")
    threads = Counter({g: th1[g] - th0.get(g, 0.0) for g in th1})
    return Profile(seconds=t1 - t0, cpu_s=c1 - c0, threads_s=+threads)


async def _samples(jfr_path: Path) -> AsyncIterator[str]:
    """Each execution sample of the recording: its text (thread line and frames)."""
    proc = await asyncio.create_subprocess_exec(
        _tool("jfr"), "print", "--stack-depth", str(STACK_DEPTH), "--events", "jdk.ExecutionSample", str(jfr_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, limit=1 << 20)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async for raw in proc.stdout:
            line = raw.decode(errors="replace")
            if line.startswith("jdk.ExecutionSample"):
                lines = []
            elif line.startswith("}"):
                yield "".join(lines)
            else:
                lines.append(line)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def classify_recording(profile: Profile, jfr_path: Path) -> None:
    async for stack in _samples(jfr_path):
        thread = stack.partition("sampledThread = ")[2]
        if not thread.startswith(_APART_PREFIXES):
            profile.samples[classify(stack)] += 1
    if not profile.samples:
        raise BenchError(f"the recording {jfr_path} holds no execution sample: was the node idle, or the "
                         "window too short?")


async def profile_node(proc: psutil.Process, seconds: float, keep: Path | None = None) -> Profile:
    """Record the node for `seconds` and classify what it ran; the recording is kept at `keep`
    (an absolute path: the JVM writes it, from its own working directory)."""
    with tempfile.TemporaryDirectory(prefix="legato-jfr-") as tmp:
        os.chmod(tmp, 0o755)
        path = keep.absolute() if keep else Path(tmp) / "cassandra.jfr"  # noqa: ASYNC240 (getcwd, no I/O wait)
        profile = await record(proc, seconds, path)
        await classify_recording(profile, path)
    return profile

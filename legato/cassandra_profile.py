"""`legato bench cassandra-profile`: what the Cassandra JVM's CPU is spent on while something runs
against it (a `legato load` run on a cluster, a bench, an application), from a Java Flight
Recorder recording of the node.

For `--seconds`, the node records with JFR (`jcmd PID JFR.start`, the JDK's own profiler: it samples
the threads in Java code every 10-20 ms at about 1% of overhead) and the CPU time of each of its
threads is read at both ends of the window (/proc). Each execution sample is put in the first
`CATEGORIES` entry one of whose markers is in its stack (`jfr print`, the whole stack), and each
thread group's CPU is split by its own samples' categories: a sample says what a thread was
doing, not that it had a core (on a busy machine a runnable thread waits for one), so samples
alone would over-weigh the threads that wait. Groups no sample saw (the garbage collector and
the JIT compiler run no Java code) are shown as they are. Starting a recording makes a warm node's
JIT compiler recompile for a while (on a cluster run: 57.5 of the node's 113.8 s of CPU in a 120 s
window, where the same node's JIT used about 4 ms a second before): the node's total over the
window is not its cost without the recorder, the other groups' shares are what to read.

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
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from legato.bench import BenchError
from legato.bench_cassandra import BACKGROUND_THREADS, cpu_s, thread_times

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
NO_SAMPLE = "threads no sample saw"  # GC, JIT: CPU outside Java code, shown by thread group
ENDED = "threads that ended in the window"
SMALL_SHARE = 0.01  # unsampled thread groups below this share of the JVM's CPU are shown as one row

# Thread groups, by the first 15 characters of a thread's name (what Linux keeps as its name).
# Cassandra's request threads are one pool whose workers rename themselves as they move between
# stages, so they are one group; the others by what they do.
REQUEST_THREADS = "request threads (Native-Transport, MutationStage, ReadStage...)"
THREAD_GROUPS: dict[str, str] = {
    **{p: REQUEST_THREADS for p in ("Native-Transpor", "MutationStage", "ReadStage", "CounterMutation",
                                     "ViewMutationSta", "RequestRespons", "SharedPool-Work")},
    "epollEventLoopG": "network event loops", **BACKGROUND_THREADS}


def thread_group(name: str) -> str:
    short = name[:15]
    return next((g for prefix, g in THREAD_GROUPS.items() if short.startswith(prefix)),
                short.rstrip("0123456789-:_ ") or short)


@dataclass
class Profile:
    """The JVM's CPU over a window, split by category: each thread group's CPU (measured per
    thread) is split by what its own samples show (a thread sampled while runnable but off the CPU
    counts no more than its CPU: samples alone would over-weigh threads that wait for a core)."""

    seconds: float  # the window's wall time
    cpu_s: float  # the JVM's CPU over the window (user + system)
    group_cpu_s: dict[str, float] = field(default_factory=dict)  # thread group -> CPU seconds (live threads)
    samples: dict[str, Counter[str]] = field(default_factory=dict)  # thread group -> category -> samples

    @property
    def total_samples(self) -> int:
        return sum(sum(c.values()) for c in self.samples.values())

    def category_cpu_s(self) -> dict[str, float]:
        """category -> CPU seconds; what no sample saw by thread group, and the threads that ended."""
        out: defaultdict[str, float] = defaultdict(float)
        for group, cpu in self.group_cpu_s.items():
            seen = self.samples.get(group)
            if not seen:  # one row per group that matters, the small ones together
                out[f"{NO_SAMPLE}: {group}" if cpu >= SMALL_SHARE * self.cpu_s else f"{NO_SAMPLE}: others"] += cpu
                continue
            n = sum(seen.values())
            for category, k in seen.items():
                out[category] += cpu * k / n
        ended = self.cpu_s - sum(self.group_cpu_s.values())
        if ended > 0.05 * self.cpu_s:
            out[ENDED] += ended
        return dict(_by_cpu(out))

    def to_json(self) -> dict[str, Any]:
        split = self.category_cpu_s()
        return {"seconds": round(self.seconds, 3), "cpu_s": round(self.cpu_s, 3), "samples": self.total_samples,
                "categories": {c: {"cpu_s": round(v, 3), "share": round(v / self.cpu_s, 4) if self.cpu_s else 0.0}
                               for c, v in split.items()},
                "threads_cpu_s": {g: round(v, 3) for g, v in _by_cpu(self.group_cpu_s)}}

    def text(self) -> str:
        lines = [f"Cassandra JVM: {self.cpu_s:.1f} s of CPU in {self.seconds:.1f} s "
                 f"({self.cpu_s / self.seconds:.2f} cores); {self.total_samples} execution samples",
                 "CPU by what it was spent on (each thread group's CPU split by its samples' stacks):"]
        for c, v in self.category_cpu_s().items():
            lines.append(f"  {v / self.cpu_s * 100 if self.cpu_s else 0:5.1f}%  {v:7.1f} s  {c}")
        lines.append("CPU by thread group:")
        for g, v in _by_cpu(self.group_cpu_s):
            lines.append(f"  {v:7.1f} s  {g}")
        return "\n".join(lines)


def _by_cpu(d: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(d.items(), key=lambda kv: -kv[1])


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


def group_deltas(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU over the window by thread group, of the threads alive at its end (a thread is in the
    group of its name at the end: request threads rename themselves, within their one group)."""
    out: defaultdict[str, float] = defaultdict(float)
    for tid, (name, cpu) in after.items():
        out[thread_group(name)] += cpu - before.get(tid, (name, 0.0))[1]
    return {g: v for g, v in out.items() if v > 0}


async def record(proc: psutil.Process, seconds: float, jfr_path: Path) -> Profile:
    """Record the JVM for `seconds` into `jfr_path`; the CPU of the window, by thread group."""
    check_jvm(proc)
    jcmd = _tool("jcmd")
    _tool("jfr")
    pid = str(proc.pid)
    await _run(jcmd, pid, "JFR.start", f"name={RECORDING}", "settings=profile")
    try:
        t0, c0, th0 = time.monotonic(), cpu_s(proc), thread_times(proc)
        await asyncio.sleep(seconds)  # the measurement window itself, not a wait for anything
        t1, c1, th1 = time.monotonic(), cpu_s(proc), thread_times(proc)
    finally:
        await _run(jcmd, pid, "JFR.stop", f"name={RECORDING}", f"filename={jfr_path}")
    return Profile(seconds=t1 - t0, cpu_s=c1 - c0, group_cpu_s=group_deltas(th0, th1))


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
        thread = stack.partition('sampledThread = "')[2].partition('"')[0]
        profile.samples.setdefault(thread_group(thread), Counter())[classify(stack)] += 1
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

"""confluent-kafka (librdkafka) under asyncio (docs/queues.md, "The Kafka client").

librdkafka's calls are synchronous, so none of them runs on the event loop except `produce()`,
which only puts a message on librdkafka's queue, and the pump's reads, which never wait:

* `AsyncProducer.send()` produces and returns an asyncio future. A thread of the producer's own
  blocks in `poll()` (librdkafka wakes it as soon as a delivery report is ready) and hands all
  the reports one `poll()` served to the loop with a single `call_soon_threadsafe`.
* `PumpedConsumer`: one pump thread per process reads every consumer of the process with
  `consume(timeout=0)`, which never waits, round after round, and hands each batch to its
  consumer's loop, where the consumer's sink takes it. A consumer is read again only once its
  loop took the previous batch (back-pressure, and a batch is always taken before a rebalance
  callback of the next read reaches the loop). An idle pump waits 0.25 ms between rounds,
  doubling up to 20 ms; a taken batch, a new consumer or a delivery report of a producer of the
  process (what was just acknowledged is about to be fetched) wakes it and starts over at 0.25 ms.
  So the dozens of timer consumers of a history node (one per shard) and matching's consumer cost
  one thread, not one each, and an idle process about 50 rounds a second; the fetching itself is
  librdkafka's (its threads prefetch from the brokers). The price: a message that comes after a
  quiet spell from another process waits up to 20 ms in librdkafka's queue.
* The calls that wait for a broker (commits, committed offsets, watermarks, assign, close, every
  admin request, a producer's start and flush) run with `run_blocking` in an executor of this
  module's own (`kafka-io-*` threads), never in asyncio's default executor, which other work
  shares and which has only min(32, cpus + 4) threads. A consumer's calls hold its lock, and the
  pump skips a consumer whose lock is taken instead of waiting on it (librdkafka's Python binding
  serialises the calls on one consumer).

Rebalance callbacks run inside `consume()` (on the pump thread) or `close()` (on an executor
thread); `on_loop` runs a function on the loop and waits for its result from there. Such a
function must not wait for a call on the same consumer (that call waits for the callback).

librdkafka's log lines go to the Python logger `legato.kafka.librdkafka` (LIB_LOGGER), served by
the polls above; `legato kafka ...` silences it (one error line says what went wrong).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from legato import metrics
from legato.errors import Unavailable

log = logging.getLogger("legato.kafka")
LIB_LOGGER = "legato.kafka.librdkafka"
lib_log = logging.getLogger(LIB_LOGGER)

R = TypeVar("R")

IO_THREADS = 8  # blocking Kafka calls in flight at once, over every client of the process
_PUMP_IDLE_MIN_S = 0.00025
_PUMP_IDLE_MAX_S = 0.02
_PRODUCER_POLL_S = 0.1  # a producer's poll thread looks at its stop flag this often
_PROBE_STEP_S = 0.5
_ON_LOOP_TIMEOUT_S = 60.0
_ERROR_LOG_EVERY_S = 10.0
_READY_TIMEOUT_S = 2.0  # a readiness probe's metadata request


# ---------------------------------------------------------------- blocking calls

_io_lock = threading.Lock()
_io: concurrent.futures.ThreadPoolExecutor | None = None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _io
    with _io_lock:
        if _io is None:
            _io = concurrent.futures.ThreadPoolExecutor(IO_THREADS, thread_name_prefix="kafka-io")
        return _io


async def run_blocking(fn: Callable[..., R], *args: Any) -> R:
    """`fn(*args)` on a thread of the Kafka executor (cancelling the wait leaves it running)."""
    return await asyncio.get_running_loop().run_in_executor(_executor(), functools.partial(fn, *args))


def on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., R], *args: Any,
            timeout_s: float = _ON_LOOP_TIMEOUT_S) -> R:
    """From a librdkafka thread (a rebalance callback): run `fn(*args)` on the loop, return its
    result. Raises RuntimeError when the loop is closed."""
    try:
        if asyncio.get_running_loop() is loop:
            return fn(*args)
    except RuntimeError:
        pass  # no loop runs in this thread: the usual case
    done: concurrent.futures.Future[R] = concurrent.futures.Future()

    def run() -> None:
        if done.set_running_or_notify_cancel():
            try:
                done.set_result(fn(*args))
            except BaseException as e:
                done.set_exception(e)

    loop.call_soon_threadsafe(run)
    return done.result(timeout_s)


def kafka_unavailable(what: str, e: BaseException) -> Unavailable:
    return Unavailable(f"{what}: {e}", reason="KafkaUnavailable")


def client_config(bootstrap: str, request_timeout_ms: int) -> dict[str, Any]:
    """What every client of the project shares: the brokers, the request timeout, no implicit
    topic creation, librdkafka's log lines into Python logging."""
    return {"bootstrap.servers": bootstrap, "socket.timeout.ms": request_timeout_ms,
            "allow.auto.create.topics": False, "logger": lib_log}


class ClientErrors:
    """librdkafka's error callback: what a probe needs to know, and a fatal error. librdkafka logs
    the details itself (LIB_LOGGER), so these are debug lines; errors that come with consumed
    messages are warnings, one per error code every 10 s."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.all_brokers_down = False
        self.fatal: KafkaError | None = None
        self._logged: dict[int, float] = {}

    def __call__(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.all_brokers_down = True
        if err.fatal():
            self.fatal = err
            log.error("Kafka %s: fatal error: %s", self.name, err)
        else:
            log.debug("Kafka %s: %s", self.name, err)

    def note(self, err: KafkaError) -> None:
        now = time.monotonic()
        if now - self._logged.get(err.code(), -_ERROR_LOG_EVERY_S) >= _ERROR_LOG_EVERY_S:
            self._logged[err.code()] = now
            log.warning("Kafka %s: %s", self.name, err)
        else:
            log.debug("Kafka %s: %s", self.name, err)


def probe(client: Producer | Any, bootstrap: str, timeout_s: float, errors: ClientErrors) -> None:
    """Blocking: until `client` fetched the cluster's metadata. Unavailable once every broker
    refused (librdkafka says so at once for a closed port) or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.list_topics(timeout=max(0.01, min(_PROBE_STEP_S, deadline - time.monotonic())))
            return
        except KafkaException as e:
            client.poll(0)  # serves the error callback
            if errors.all_brokers_down or time.monotonic() >= deadline:
                raise kafka_unavailable(f"cannot reach Kafka at {bootstrap}", e) from e


def commit_offsets(consumer: Consumer, offsets: list[TopicPartition]) -> None:
    """Blocking: commit `offsets` (the next offset to read, per partition) and wait for the
    broker's answer; KafkaException if it refused."""
    for tp in consumer.commit(offsets=offsets, asynchronous=False) or []:
        if tp.error is not None:
            raise KafkaException(tp.error)


# ---------------------------------------------------------------- producer

class AsyncProducer:
    """A confluent_kafka.Producer whose deliveries resolve asyncio futures. `await start()`,
    `await send(...)` (a future of the message's offset), `await stop()` (flushes)."""

    def __init__(self, conf: dict[str, Any], name: str = "producer") -> None:
        self.name = name
        self._conf = conf
        self._timeout_s = int(conf.get("message.timeout.ms", 300_000)) / 1000.0
        self._errors = ClientErrors(name)
        self._producer: Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._reports: list[tuple[asyncio.Future[int], KafkaError | None, int]] = []
        self._reports_lock = threading.Lock()
        self._latency = metrics.kafka_produce_latency.labels(name)
        self._failures = metrics.kafka_produce_errors.labels(name)

    @property
    def broken(self) -> bool:
        """librdkafka reported a fatal error: this producer cannot send any more."""
        return self._errors.fatal is not None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        producer = Producer({**self._conf, "error_cb": self._errors})
        try:
            await run_blocking(probe, producer, str(self._conf["bootstrap.servers"]),
                               int(self._conf["socket.timeout.ms"]) / 1000.0, self._errors)
        except BaseException:
            await run_blocking(producer.close)  # nothing was sent: it closes at once
            raise
        self._producer = producer
        self._thread = threading.Thread(target=self._poll_loop, name=f"kafka-{self.name}-poll", daemon=True)
        self._thread.start()

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int | None = None) -> asyncio.Future[int]:
        """Hand the message to librdkafka; the future resolves with its offset once every in-sync
        replica has it (or fails with Unavailable). Waits while librdkafka's queue is full."""
        producer, loop = self._producer, self._loop
        if producer is None or loop is None or self._stopping.is_set():
            raise Unavailable(f"the Kafka {self.name} is not running", reason="KafkaPublisherStopped")
        if self._errors.fatal is not None:
            raise Unavailable(f"the Kafka {self.name} failed: {self._errors.fatal}", reason="KafkaUnavailable")
        fut: asyncio.Future[int] = loop.create_future()
        report = functools.partial(self._delivered, fut, time.perf_counter())
        deadline = loop.time() + self._timeout_s
        while True:
            try:
                producer.produce(topic, value=value, key=key, partition=-1 if partition is None else partition,
                                 on_delivery=report)
                return fut
            except BufferError:  # librdkafka's queue is full: deliveries make room
                if self._stopping.is_set():
                    raise Unavailable(f"the Kafka {self.name} is stopping", reason="KafkaPublisherStopped") from None
                if loop.time() >= deadline:
                    raise Unavailable(f"the Kafka {self.name}'s queue stayed full", reason="KafkaUnavailable") from None
                await asyncio.sleep(0.005)
            except KafkaException as e:
                raise kafka_unavailable(f"Kafka refused a message for {topic}", e) from e

    async def unreachable(self) -> str | None:
        """Readiness: None when the brokers answer a metadata request, else why not."""
        producer = self._producer
        if producer is None:
            return f"the Kafka {self.name} is not running"
        if self._errors.fatal is not None:
            return f"the Kafka {self.name} failed: {self._errors.fatal}"
        try:
            await run_blocking(functools.partial(producer.list_topics, timeout=_READY_TIMEOUT_S))
        except KafkaException as e:
            return f"Kafka did not answer a metadata request: {e}"
        return None

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None,
                            partition: int | None = None) -> int:
        return await (await self.send(topic, value, key, partition))

    async def stop(self) -> None:
        """Deliver what was sent (up to the message timeout), then close. Sends still not
        acknowledged fail with Unavailable."""
        producer, self._producer = self._producer, None
        self._stopping.set()
        if producer is None:
            return
        thread, self._thread = self._thread, None
        await run_blocking(self._close, producer, thread)
        self._hand_over()
        with self._reports_lock:
            left = [f for f, _, _ in self._reports]
            self._reports.clear()
        for f in left:  # not delivered in time (purged): never acknowledged
            if not f.done():
                f.set_exception(Unavailable(f"the Kafka {self.name} stopped first", reason="KafkaPublisherStopped"))

    def _close(self, producer: Producer, thread: threading.Thread | None) -> None:
        if thread is not None:
            thread.join()
        if producer.flush(self._timeout_s) > 0:
            producer.purge()
            producer.flush(0)  # their (failed) delivery reports
        producer.close()

    # ------------------------------------------------------------ librdkafka's threads

    def _delivered(self, fut: asyncio.Future[int], sent: float, err: KafkaError | None, msg: Message) -> None:
        """Delivery report (inside poll or flush): kept for the batch handed to the loop."""
        if err is None:
            self._latency.observe(time.perf_counter() - sent)
        else:
            self._failures.inc()
        offset = msg.offset()
        with self._reports_lock:
            self._reports.append((fut, err, -1 if offset is None else offset))

    def _poll_loop(self) -> None:
        producer = self._producer
        assert producer is not None
        while not self._stopping.is_set():
            try:
                producer.poll(_PRODUCER_POLL_S)
            except Exception:  # a bug in a callback; keep serving the others
                log.exception("Kafka %s: poll failed", self.name)
            self._hand_over()

    def _hand_over(self) -> None:
        with self._reports_lock:
            if not self._reports:
                return
            batch, self._reports = self._reports, []
        _pump.wake()  # what was just acknowledged can be read now, most often by a consumer of this process
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(_resolve, batch, self.name)
        except RuntimeError:
            pass  # the loop is closed: nobody waits for these any more


def _resolve(batch: list[tuple[asyncio.Future[int], KafkaError | None, int]], name: str) -> None:
    for fut, err, offset in batch:
        if fut.done():
            continue
        if err is None:
            fut.set_result(offset)
        else:
            fut.set_exception(Unavailable(f"Kafka did not acknowledge a message of the {name}: {err}",
                                          reason="KafkaUnavailable"))


# ---------------------------------------------------------------- consumers

class PumpedConsumer:
    """A confluent_kafka.Consumer read by the pump: every batch it reads goes to `sink(messages)`
    on the loop that made it (messages without errors, in order). `read()` starts the reading,
    `call(fn)` runs `fn(consumer)` on an executor thread, `close()` closes it."""

    def __init__(self, conf: dict[str, Any], sink: Callable[[list[Message]], None], name: str,
                 batch: int = 1000) -> None:
        self.name = name
        self.batch = batch  # the most messages one read takes (the sink may change it)
        self._loop = asyncio.get_running_loop()
        self._sink = sink
        self.errors = ClientErrors(name)
        self._consumer = Consumer({**conf, "error_cb": self.errors})
        self._lock = threading.Lock()  # held by a call, and by the pump while it reads
        self._reading = False
        self._delivering = False  # a batch is on its way to the loop
        self._held = False  # not read for now (see hold)
        self._closed = False
        self._closing: asyncio.Future[None] | None = None

    def read(self) -> None:
        """Start reading (after assign or subscribe)."""
        if not self._closed and not self._reading:
            self._reading = True
            _pump.add(self)

    def stop_reading(self) -> None:
        """No more batches for the sink (batches on their way are dropped); `close()` still has to
        close the consumer."""
        self._reading = False
        _pump.remove(self)

    def hold(self, held: bool) -> None:
        """Not read until released (e.g. while a pause of every partition is on its way)."""
        self._held = held
        if not held:
            _pump.wake()

    async def call(self, fn: Callable[[Consumer], R]) -> R:
        """`fn(consumer)` on an executor thread, while the pump leaves this consumer alone."""
        if self._closed:
            raise Unavailable(f"the Kafka consumer {self.name} is closed", reason="KafkaConsumerClosed")
        return await run_blocking(self._locked, fn)

    def _locked(self, fn: Callable[[Consumer], R]) -> R:
        with self._lock:
            if self._closed:
                raise Unavailable(f"the Kafka consumer {self.name} is closed", reason="KafkaConsumerClosed")
            return fn(self._consumer)

    async def close(self) -> None:
        """Stop reading and close (a subscribed consumer's revoke callback runs, then it leaves
        its group). Batches still on their way are dropped."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
            self.stop_reading()
            try:
                await run_blocking(self._close_now)
            finally:
                self._closing.set_result(None)
        await asyncio.shield(self._closing)

    def _close_now(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._consumer.close()

    # ------------------------------------------------------------ the pump's side

    def _read(self) -> bool:
        """On the pump thread: read what librdkafka has (never waits); whether a batch came."""
        if not self._reading or self._delivering or self._held or not self._lock.acquire(blocking=False):
            return False
        try:
            if self._closed:
                return False
            messages = self._consumer.consume(max(1, self.batch), 0)
        except Exception as e:
            log.warning("Kafka consumer %s: reading failed: %s", self.name, e)
            return False
        finally:
            self._lock.release()
        if not messages:
            return False
        self._delivering = True
        try:
            self._loop.call_soon_threadsafe(self._take, messages)
        except RuntimeError:  # the loop is closed: nobody takes anything any more
            self._reading = False
            _pump.remove(self)
        return True

    def _take(self, messages: list[Message]) -> None:
        """On the loop: the batch goes to the sink (unless reading stopped meanwhile)."""
        try:
            if self._reading:
                good = []
                for m in messages:
                    err = m.error()
                    if err is None:
                        good.append(m)
                    else:
                        self.errors.note(err)
                if good:
                    self._sink(good)
        except Exception:
            log.exception("Kafka consumer %s: taking a batch failed", self.name)
        finally:
            self._delivering = False
            _pump.wake()


class _Pump:
    """The thread that reads every PumpedConsumer of the process; it ends when there is none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._consumers: list[PumpedConsumer] = []
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, c: PumpedConsumer) -> None:
        with self._lock:
            if c not in self._consumers:
                self._consumers.append(c)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kafka-pump", daemon=True)
                self._thread.start()
        self._wake.set()

    def remove(self, c: PumpedConsumer) -> None:
        with self._lock:
            if c in self._consumers:
                self._consumers.remove(c)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        idle = _PUMP_IDLE_MIN_S
        while True:
            with self._lock:
                if not self._consumers:
                    self._thread = None
                    return
                consumers = list(self._consumers)
            self._wake.clear()
            got = False
            for c in consumers:
                try:
                    got = c._read() or got
                except Exception:
                    log.exception("Kafka consumer %s: the pump failed to read it", c.name)
            if got:
                idle = _PUMP_IDLE_MIN_S
            elif self._wake.wait(idle):
                idle = _PUMP_IDLE_MIN_S
            else:
                idle = min(idle * 2, _PUMP_IDLE_MAX_S)


_pump = _Pump()

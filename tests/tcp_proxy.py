"""A TCP proxy a test controls, to cut a process off from a server (a network partition).

    proxy = TcpProxy("127.0.0.1", 2181)
    port = await proxy.start()      # point the process under test at 127.0.0.1:port
    proxy.blackhole()               # from now on nothing gets through either way (no RST: a partition)
    proxy.heal()                    # new connections get through again
    await proxy.stop()

Blackholing keeps the connections open and silently drops what arrives, as a network partition
does, so the client notices only by its own timeouts; `reset()` closes them instead.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropping = False
        self.connections = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def blackhole(self) -> None:
        self.dropping = True

    def heal(self) -> None:
        self.dropping = False

    def reset(self) -> None:
        for w in list(self._writers):
            w.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.reset()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        if self.dropping:  # accepted, never answered: a connection attempt into the partition
            await self._drain_forever(reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        pumps = [asyncio.create_task(self._pump(reader, up_writer)), asyncio.create_task(self._pump(up_reader, writer))]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)
        self._tasks.difference_update(pumps)
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                if self.dropping:
                    continue  # lost in the partition
                writer.write(data)
                await writer.drain()

    async def _drain_forever(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

"""A network between the bench and a loopback server: a TCP proxy that delays every byte by half
a round-trip each way (and the connection itself by one round-trip), so a protocol's round-trips
cost what they cost to a provider some cities away. Byte-transparent: STARTTLS and its handshake
pass through it and pay their round-trips too."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import TracebackType


class DelayedLink:
    """Listen on 127.0.0.1:`port` and forward to 127.0.0.1:`upstream` with `rtt` seconds of
    round-trip: a connection is usable one round-trip after it is accepted (the TCP handshake),
    and each chunk is delivered half a round-trip after it was read, in order."""

    def __init__(self, upstream: int, rtt: float) -> None:
        self.upstream = upstream
        self.rtt = rtt
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="delayed-link")
        self._server: asyncio.base_events.Server | None = None

    def __enter__(self) -> DelayedLink:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the delaying proxy did not start")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def listen() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(listen())
        self._loop.run_forever()

    async def _serve(self, client_in: asyncio.StreamReader,
                     client_out: asyncio.StreamWriter) -> None:
        try:
            await asyncio.sleep(self.rtt)
            server_in, server_out = await asyncio.open_connection("127.0.0.1", self.upstream)
            await asyncio.gather(self._pump(client_in, server_out),
                                 self._pump(server_in, client_out), return_exceptions=True)
        except (OSError, asyncio.CancelledError):  # refused upstream, or the link shutting down
            client_out.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copy `source` to `sink`, each chunk half a round-trip late, order kept."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not chunk:
                    break
                sink.write(chunk)
                await sink.drain()

        writer = asyncio.create_task(deliver())
        try:
            while True:
                chunk = await source.read(65536)
                queue.put_nowait((time.monotonic() + self.rtt / 2, chunk))
                if not chunk:
                    break
            await writer
        except (OSError, asyncio.IncompleteReadError):
            writer.cancel()
        finally:
            with contextlib.suppress(Exception):
                sink.close()

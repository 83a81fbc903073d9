"""The HTTP endpoint of `serve`: a guard in front of Triton's own HTTP server.

Triton 2.51's HTTP server (the one nvidia-pytriton 0.7.0 ships) dies with SIGSEGV when it answers a
request body of more than 4 MiB with an error: one 10 MB `curl` to any endpoint took the whole server
down on this machine (Triton issue #5840 reports the same crash above about 4 MB). So Triton's HTTP
server listens on a private loopback port, and this guard on the public one passes every request of at
most `MAX_BODY_BYTES` through unchanged and answers larger ones itself (413, with what is wrong, as
Triton's JSON error). Responses go back byte for byte. One upstream connection per client connection,
one request at a time on it (HTTP/1.1 without pipelining, as curl and Triton's clients send).
gRPC and metrics go to Triton directly (its gRPC server refuses large messages cleanly).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

MAX_BODY_BYTES = 2 * 2**20  # a full batch of texts fits (32 rows of up to 64 KiB); Triton's crash starts at 4 MiB
MAX_HEAD_BYTES = 64 * 2**10
_DISCARD_LIMIT = 64 * 2**20  # a larger refused body is not read to its end: the connection is closed


class HttpGuard:
    """An asyncio server on (host, port) in front of Triton's HTTP server at (upstream_host, upstream_port)."""

    def __init__(self, host: str, port: int, upstream_host: str, upstream_port: int):
        self.address, self.upstream = (host, port), (upstream_host, upstream_port)
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._connection, *self.address, reuse_address=True,
                                                 limit=MAX_HEAD_BYTES)

    def close(self) -> None:
        """Stop accepting connections; open ones go on until their requests are answered."""
        if self.server is not None:
            self.server.close()

    async def drained(self, timeout: float) -> None:
        """Wait for the open connections to end (Triton answers what it has, then closes them)."""
        if self.connections:
            await asyncio.wait(self.connections, timeout=timeout)
        for task in self.connections:
            task.cancel()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        upstream = None
        try:
            upstream = await asyncio.open_connection(*self.upstream, limit=MAX_HEAD_BYTES)
            while await self._exchange(reader, writer, *upstream):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            pass  # a client or Triton that went away: this connection ends, the others go on
        finally:
            self.connections.discard(task)
            for stream in (writer, upstream[1] if upstream else None):
                if stream is not None:
                    stream.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> bool:
        """One request and its response; False when the connection is over."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # the client closed between requests
        except asyncio.LimitOverrunError:
            await _refuse(writer, 431, f"request headers exceed {MAX_HEAD_BYTES} bytes")
            return False
        headers = _headers(head)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            await _refuse(writer, 411, "send the request body with a Content-Length, not chunked")
            return False
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY_BYTES:
            if length <= _DISCARD_LIMIT and "100-continue" not in headers.get("expect", "").lower():
                await _discard(reader, length)  # so that the client, still sending, reads the answer
            await _refuse(writer, 413, f"request body is {length} bytes; this server takes at most "
                                       f"{MAX_BODY_BYTES} bytes per request: send fewer or shorter rows per request")
            return False
        if "100-continue" in headers.get("expect", "").lower():  # answered here, so Triton sends no interim reply
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            head = b"\r\n".join(line for line in head.split(b"\r\n") if not line.lower().startswith(b"expect:"))
        up_writer.write(head + await reader.readexactly(length))
        await up_writer.drain()
        response_head = await up_reader.readuntil(b"\r\n\r\n")
        writer.write(response_head)
        status = int(response_head.split(b" ", 2)[1])
        if not head.startswith(b"HEAD ") and status not in (204, 304):
            await _copy_body(up_reader, writer, _headers(response_head))
        await writer.drain()
        keep = headers.get("connection", "").lower() != "close"
        return keep and _headers(response_head).get("connection", "").lower() != "close"


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    pairs = (line.split(":", 1) for line in lines if ":" in line)
    return {name.strip().lower(): value.strip() for name, value in pairs}


async def _copy_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]) -> None:
    """A response body, as it comes: Content-Length bytes, chunks up to the last one, or all until EOF."""
    if "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining:
            chunk = await reader.read(min(remaining, 2**16))
            if not chunk:
                raise ConnectionError("Triton closed mid-response")
            writer.write(chunk)
            remaining -= len(chunk)
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            writer.write(size_line + await reader.readexactly(size + 2))
            await writer.drain()
            if size == 0:
                return
    else:
        while chunk := await reader.read(2**16):
            writer.write(chunk)


async def _discard(reader: asyncio.StreamReader, length: int) -> None:
    while length:
        chunk = await reader.read(min(length, 2**16))
        if not chunk:
            return
        length -= len(chunk)


async def _refuse(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    """Triton's error form, `{"error": "..."}`, with the connection closed after it."""
    reasons = {411: "Length Required", 413: "Payload Too Large", 431: "Request Header Fields Too Large"}
    body = json.dumps({"error": message}).encode()
    writer.write(f"HTTP/1.1 {status} {reasons[status]}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()

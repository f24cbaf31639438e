"""The serving front: no worker waits on a client that has not sent its whole request.

gunicorn's sync workers give a whole process to each connection from its first byte: five
clients that never finish their headers stopped the service. Here each gunicorn worker
runs an asyncio event loop (uvicorn, with the C parser httptools): headers and body are
read without holding a thread, a body over the size limit is refused as it arrives, and
only a complete request is handed to the Flask application, which runs in a one-thread
pool (a2wsgi). Slow or half-open connections cost a socket and a few kilobytes each.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from a2wsgi import WSGIMiddleware
from uvicorn_worker import UvicornWorker

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# One thread per worker, as with sync workers: the engine is CPU-bound (one thread at a
# time holds the GIL) and each thread in flight holds a whole decoded request; more threads
# only added memory (225 MB per worker with 8 threads on 3 MB requests).
WSGI_THREADS = 1
ROTATE_EVERY = 20


class Worker(UvicornWorker):
    """gunicorn's uvicorn worker, without uvicorn's own access log (the service logs each
    request once, as JSON, with nothing private) and without a Server header."""

    CONFIG_KWARGS = {  # noqa: RUF012 - the base class reads it as a class attribute
        "loop": "asyncio",
        "http": "httptools",  # the C parser; the stdlib asyncio loop (uvloop measured no better)
        "access_log": False,
        "server_header": False,
    }


class BufferedRequests:
    """Reads each request body whole (up to ``limit`` bytes, chunked or not) before the
    application sees it; what is over the limit is a 413 OperationOutcome.

    Every ``rotate``-th response on a connection says ``Connection: close``. An event-loop
    worker accepts every connection waiting when it wakes, so a client's few keep-alive
    connections can all land on one worker (one CPU) while the others idle; a client that
    reconnects now and then is spread over the workers again, the idle ones first.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        rotate: int = ROTATE_EVERY,
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.rotate = rotate
        self.on_shutdown = on_shutdown
        self._served: dict[Any, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await _too_large(send, self.limit)
                return
            chunks.append(body)
            if not message.get("more_body"):
                break
        data = b"".join(chunks)
        headers = [
            (name, value)
            for name, value in scope.get("headers", [])
            if name.lower() not in (b"content-length", b"transfer-encoding")
        ]
        if data or scope.get("method") in ("POST", "PUT", "PATCH"):
            headers.append((b"content-length", str(len(data)).encode()))
        replayed = False
        client = scope.get("client")
        served = self._served.get(client, 0) + 1
        closing = served >= self.rotate
        if closing:
            self._served.pop(client, None)
        else:
            self._served[client] = served
        if len(self._served) > 10_000:  # connections that went away: forget them
            self._served.clear()

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(
                    message, headers=[*message.get("headers", []), (b"connection", b"close")]
                )
            await send(message)

        async def whole() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        await self.app(dict(scope, headers=headers), whole, closing_send if closing else send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """The worker's start and stop: at a graceful stop, ``on_shutdown`` runs (what a
        worker gathered in memory reaches the store) before the process ends."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.on_shutdown is not None:
                    try:
                        await asyncio.get_running_loop().run_in_executor(None, self.on_shutdown)
                    except Exception as exc:  # a failed flush must not hang the stop
                        log.warning("shutdown work failed (%s)", type(exc).__name__)
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "too-long",
                    "diagnostics": f"the request body is larger than {limit} bytes",
                }
            ],
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/fhir+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def asgi(wsgi_app: Any, limit: int, on_shutdown: Callable[[], None] | None = None) -> ASGIApp:
    """The Flask application behind the buffering front."""
    return BufferedRequests(
        WSGIMiddleware(wsgi_app, workers=WSGI_THREADS), limit, on_shutdown=on_shutdown
    )

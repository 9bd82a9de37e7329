"""Serving the gateway: aiohttp's runner, with problem+json for requests its parser refuses.

aiohttp's HTTP parser refuses an over-long header or request line, or a malformed request,
before any middleware runs, and answers plain text; here it answers RFC 9457 problem+json.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.problems import problem_response

log = logging.getLogger(__name__)

# Room for the longest query an OAuth callback may carry, percent-encoded.
MAX_LINE_BYTES = 65536
# aiohttp's default: one header line (name or value) of at most 8 KiB.
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 128
SHUTDOWN_TIMEOUT_S = 5.0


def refusal(exc: BaseException | None, *, max_field: int, max_line: int) -> tuple[int, str]:
    """The status and detail for a request the parser refused with `exc`."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1]
        if limit == max_field:
            return 431, f"a request header is longer than {max_field} bytes"
        if limit == max_line:
            return 414, f"the request line is longer than {max_line} bytes"
    if isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message:
        return 431, f"more than {MAX_HEADERS} request headers"
    return 400, "the request is not valid HTTP/1.1"


class ProblemRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("a response was sent already: no room for the error")
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            detail, code = "internal server error", "internal"
        else:
            status, detail = refusal(
                exc, max_field=self.max_field_size, max_line=self.max_line_size
            )
            code = "bad_request"
            log.info("refused a request from %s: %s", request.remote, detail)
        response = problem_response(status, detail, instance=None, code=code)
        response.force_close()
        return response


class ProblemServer(web.Server):
    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return ProblemServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **server._kwargs,
        )


def runner(app: web.Application) -> GatewayRunner:
    return GatewayRunner(
        app,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        max_line_size=MAX_LINE_BYTES,
        max_field_size=MAX_FIELD_BYTES,
        max_headers=MAX_HEADERS,
    )


async def serve(app: web.Application, host: str, port: int) -> None:
    """Serve `app` until SIGINT or SIGTERM, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app_runner = runner(app)
    await app_runner.setup()
    try:
        await web.TCPSite(app_runner, host, port).start()
        await stop.wait()
    finally:
        await app_runner.cleanup()

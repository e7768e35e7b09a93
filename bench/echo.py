"""The floor's server: bare aiohttp on loopback, no Caisey code (``python -m bench.echo --port P``).

- ``GET /ws``: a WebSocket that answers every text message with a fixed reply of
  ``--reply-bytes`` (the size of a ``prompt.receipt``);
- ``POST /post``: reads the body, answers a JSON body of ``--response-bytes`` (a prompt object);
- ``GET /get``: the same answer without a body (a ``GET`` of one prompt).

It runs in its own process, as the bridge does, so the floor pays the same process hop.
"""

from __future__ import annotations

import argparse
import sys

from aiohttp import WSMsgType, web


def build(reply_bytes: int, response_bytes: int) -> web.Application:
    reply = "r" * reply_bytes
    payload = b'{"x":"' + b"p" * max(0, response_bytes - 8) + b'"}'

    async def ws_handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(reply)
        return ws

    async def post(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=payload, content_type="application/json")

    async def get(request: web.Request) -> web.Response:
        return web.Response(body=payload, content_type="application/json")

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    app.router.add_post("/post", post)
    app.router.add_get("/get", get)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reply-bytes", type=int, default=200)
    parser.add_argument("--response-bytes", type=int, default=800)
    args = parser.parse_args(argv)
    web.run_app(build(args.reply_bytes, args.response_bytes), host="127.0.0.1", port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())

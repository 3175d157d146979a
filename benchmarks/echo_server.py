"""The baseline for the HTTP benchmark: an aiohttp handler that echoes the request body,
with the same content types as POST /tsa. What aiohttp itself costs on this machine."""

import sys

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(body=body, content_type="application/timestamp-reply")


def main() -> None:
    if "--uvloop" in sys.argv:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.install()
    app = web.Application(client_max_size=16 * 1024)
    app.router.add_post("/tsa", echo)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()

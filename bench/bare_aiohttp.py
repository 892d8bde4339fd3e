"""The floor of SPEC §8: an aiohttp handler that parses the JSON body and answers, nothing else.

    python bench/bare_aiohttp.py [--port 18807]

POST /hook with the benchmark payload answers {"ok": true, "plate": ...} (orjson, like the
gateway's `web.json_bytes_response`). Started and driven by bench_http.py.
"""

from __future__ import annotations

import argparse

import orjson
from aiohttp import web


async def hook(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    answer = {"ok": True, "plate": body["device"]["plate"]}
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description="bare aiohttp JSON handler")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18807)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/hook", hook)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()

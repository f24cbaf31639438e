"""The ceiling: the same stack (gunicorn, Flask, orjson) answering a fixed ``{"cards": []}``
after reading and JSON-decoding the request body. No service on this stack can beat it."""

from __future__ import annotations

import orjson
from flask import Flask, Response, request

EMPTY = b'{"cards":[]}'


def create_ceiling_app() -> Flask:
    app = Flask(__name__)

    @app.post("/cds-services/<service_id>")
    def hook(service_id: str) -> Response:
        orjson.loads(request.get_data(cache=False))
        return Response(EMPTY, mimetype="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        return Response(b'{"status":"ready"}', mimetype="application/json")

    return app

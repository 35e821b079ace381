"""A local webhook receiver for development (`skipwatch notify-receiver`, run by `skipwatch up`):
verifies each Standard Webhooks signature with the official library and prints what arrived."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def describe(payload: dict[str, Any]) -> str:
    data = payload.get("data", {})
    return (
        f"{payload.get('type')} {data.get('severity')} loan={data.get('loan_id')} "
        f"rule={data.get('rule_id')} risk={data.get('risk_score')} — {data.get('title')} "
        f"{data.get('link')}"
    )


def receiver_app(secret: str) -> Starlette:
    webhook = Webhook(secret)

    async def receive(request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        try:
            payload = webhook.verify(body, headers)
        except WebhookVerificationError as exc:
            sys.stdout.write(f"REJECTED {headers.get('webhook-id')}: {exc}\n")
            sys.stdout.flush()
            return JSONResponse({"error": str(exc)}, status_code=400)
        sys.stdout.write(f"verified {headers['webhook-id']}: {describe(payload)}\n")
        sys.stdout.flush()
        return Response(status_code=204)

    return Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])


def serve(host: str, port: int, secret: str) -> None:
    uvicorn.run(receiver_app(secret), host=host, port=port, log_level="warning")

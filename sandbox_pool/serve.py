"""The judge over HTTP (Ray Serve): POST JSON, get the verdict and RLEF feedback back.

Request: ``{"problem": <problem row>, "code": str, "tests": "public"|"private"|"all"}``.
Response: ``{"verdict", "tests": [{"status", "public", "detail", "wall_s"}], "feedback"}``.
Bound to 127.0.0.1 by default; binding anywhere else requires a bearer token. A body over
``MAX_BODY_BYTES`` is refused (413) while it is read, so memory stays bounded whatever is sent.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from dataclasses import asdict

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from proctor.problems.format import ProblemError, parse_problem
from proctor.sandbox_pool.feedback import feedback_text
from proctor.sandbox_pool.judge import Verdict, judge
from proctor.sandbox_pool.runner import Backend, Sandbox

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_BODY_BYTES = 4 << 20


def _too_big(size: int) -> JSONResponse:
    return JSONResponse({"error": f"body of {size} bytes or more is over the {MAX_BODY_BYTES} byte limit"},
                        status_code=413)


async def read_body(request: Request) -> bytes | JSONResponse:
    """The request body, or a 413 response as soon as it is known to exceed ``MAX_BODY_BYTES``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return _too_big(int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return _too_big(size)
        chunks.append(chunk)
    return b"".join(chunks)


def verdict_json(v: Verdict) -> dict:
    return {"verdict": v.verdict,
            "tests": [{k: d[k] for k in ("status", "public", "detail", "wall_s")} for d in map(asdict, v.tests)],
            "feedback": feedback_text(v)}


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
class JudgeService:
    def __init__(self, backend: Backend = "auto", slots: int = 2, token: str | None = None):
        self.sandbox = Sandbox(backend, slots)
        self.token = token

    async def __call__(self, request: Request) -> JSONResponse:
        if self.token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        raw = await read_body(request)
        if isinstance(raw, JSONResponse):
            return raw
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return JSONResponse({"error": f"body is not JSON: {getattr(e, 'msg', e)}"}, status_code=400)
        if not isinstance(body, dict) or not isinstance(body.get("code"), str) or not isinstance(body.get("problem"), dict):
            return JSONResponse({"error": "body must be an object with fields problem (object) and code (string)"},
                                status_code=422)
        which = body.get("tests", "all")
        if which not in ("public", "private", "all"):
            return JSONResponse({"error": f"field tests: must be public, private or all, got {which!r}"},
                                status_code=422)
        try:
            problem = parse_problem(body["problem"], "problem")
        except ProblemError as e:
            return JSONResponse({"error": str(e)}, status_code=422)
        verdict = await asyncio.to_thread(judge, self.sandbox, problem, body["code"], which)
        return JSONResponse(verdict_json(verdict))


def check_bind(host: str, token: str | None) -> None:
    if host not in LOOPBACK and not token:
        raise ValueError(f"binding the judge to {host} needs a bearer token (--token): it executes code sent to it")


def start(host: str = "127.0.0.1", port: int = 8000, token: str | None = None, backend: Backend = "auto",
          slots: int = 2, route: str = "/judge"):
    """Deploy the service on the running Ray; returns its URL."""
    check_bind(host, token)
    serve.start(http_options={"host": host, "port": port})
    serve.run(JudgeService.bind(backend, slots, token), name="proctor-judge", route_prefix=route)  # type: ignore[attr-defined]
    return f"http://{host}:{port}{route}"

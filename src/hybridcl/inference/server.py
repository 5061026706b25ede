"""``hybridcl serve RUN_DIR``: an OpenAI-compatible HTTP API over a run's tasks (FastAPI on uvicorn).

``model`` is a task name or ``auto`` (the run's router chooses, or a ``[task]`` tag at the start of
the prompt); each answer says which task served it (``model`` in the response, and ``hybridcl_task``).
Endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions`` (where the base has a chat template;
the last user message is the prompt, formatted with the task's own template as training saw it),
``GET /v1/models`` and ``GET /health``. Errors are OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``: 400 for bad input (naming the field), 401 for a
missing or wrong key, 404 for an unknown task, 429 with ``Retry-After`` when the queue is full.
It binds 127.0.0.1 unless told otherwise and refuses another address without an API key. SIGTERM
stops accepting, lets the requests in flight finish within ``--grace`` seconds and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from hybridcl.errors import ConfigError, RunError
from hybridcl.inference.engine import Busy, Engine, Settings
from hybridcl.inference.load import AUTO

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Limits:
    """Bounds on one request, in tokens."""

    max_prompt_tokens: int
    max_tokens: int


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


class _Sampling(BaseModel):
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    n: int = 1


class CompletionRequest(_Sampling):
    prompt: str | list[str]


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)


def create_app(engine: Engine, *, api_key: str | None = None, limits: Limits) -> FastAPI:
    """The ASGI app over ``engine``; ``api_key``: required as ``Authorization: Bearer KEY``."""
    app = FastAPI(title="hybridcl", docs_url=None, redoc_url=None)
    _guard(app, api_key)

    @app.get("/health")
    async def health():
        return {"status": "ok", "tasks": engine.tasks}

    @app.get("/v1/models")
    async def models():
        names = [*engine.tasks, AUTO]
        return {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "hybridcl"} for n in names]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise ApiError(400, "prompt: give at least one prompt", "prompt")
        answers = await _answer(engine, body, prompts, limits, request)
        if answers is None:
            return JSONResponse({}, status_code=499)
        return _respond(body, answers, "text_completion", lambda text: {"text": text})

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        if getattr(engine.run.tokenizer, "chat_template", None) is None:
            raise ApiError(404, "this run's base model has no chat template: use /v1/completions", None)
        users = [m.content for m in body.messages if m.role == "user"]
        if not users:
            raise ApiError(400, "messages: give at least one message with role user", "messages")
        answers = await _answer(engine, body, [users[-1]], limits, request)
        if answers is None:
            return JSONResponse({}, status_code=499)
        return _respond(
            body, answers, "chat.completion", lambda text: {"message": {"role": "assistant", "content": text}}
        )

    return app


def _guard(app: FastAPI, api_key: str | None) -> None:
    """The key check and the OpenAI-shaped errors of every endpoint."""

    @app.middleware("http")
    async def authorise(request: Request, call_next):
        if api_key is not None and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error(ApiError(401, "missing or wrong API key: send Authorization: Bearer KEY", None, "auth"))
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            return _error(ApiError(400, "the request body is not valid JSON"))
        field = ".".join(where) or None
        return _error(ApiError(400, f"{field or 'body'}: {first.get('msg', 'invalid')}", field))


async def _answer(engine: Engine, body: _Sampling, prompts: list[str], limits: Limits, request: Request):
    """``[(text, task, finish_reason, prompt_tokens, completion_tokens)]`` per prompt; None when the
    client went away first (its waiting prompts are dropped)."""
    prompt_tokens = _check(engine, body, prompts, limits)
    settings = Settings(body.max_tokens, body.temperature, body.top_p, body.seed or 0)
    try:
        futures = [engine.submit(body.model, p, settings) for p in prompts]
    except Busy as exc:
        raise ApiError(429, f"the server is busy ({exc}): retry later", None, "rate_limit_error") from None
    while not all(f.done() for f in futures):
        if await request.is_disconnected():
            for f in futures:
                f.cancel()
            return None
        await asyncio.sleep(0.01)
    limit = body.max_tokens or engine.run.config.eval.max_new_tokens
    out = []
    for n_in, future in zip(prompt_tokens, futures, strict=True):
        try:
            text, task = future.result()
        except Busy as exc:
            raise ApiError(503, f"{exc}: retry later", None, "server_error") from None
        text, stopped = _cut_at_stop(text, body.stop)
        n_out = engine.count_tokens(text, special=False)
        reason = "stop" if stopped or n_out < limit else "length"
        out.append((text, task, reason, n_in, n_out))
    return out


def _check(engine: Engine, body: _Sampling, prompts: list[str], limits: Limits) -> list[int]:
    """Refuse what this server will not answer; returns each prompt's length in tokens."""
    if body.model != AUTO and body.model not in engine.tasks:
        message = f"model {body.model!r} is not a task of this run: choose one of {', '.join([*engine.tasks, AUTO])}"
        raise ApiError(404, message, "model", "not_found_error")
    if body.n != 1:
        raise ApiError(400, f"n = {body.n}: this server returns one choice per prompt (n=1)", "n")
    if body.max_tokens is not None and body.max_tokens > limits.max_tokens:
        raise ApiError(
            400, f"max_tokens = {body.max_tokens}: this server generates at most {limits.max_tokens}", "max_tokens"
        )
    lengths = [engine.count_tokens(prompt) for prompt in prompts]
    for k, n in enumerate(lengths):
        if n > limits.max_prompt_tokens:
            raise ApiError(
                400,
                f"the prompt{'' if len(prompts) == 1 else f' {k}'} is {n} tokens; this server takes at most "
                f"{limits.max_prompt_tokens} (--max-prompt-tokens, the run's data.max_source_len by default)",
                "prompt",
            )
    return lengths


def _cut_at_stop(text: str, stop: str | list[str] | None) -> tuple[str, bool]:
    stops = [stop] if isinstance(stop, str) else (stop or [])
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _respond(body: _Sampling, answers, kind: str, content) -> Any:
    created, rid = int(time.time()), f"cmpl-{uuid.uuid4().hex}"
    tasks = [a[1] for a in answers]
    usage = {
        "prompt_tokens": sum(a[3] for a in answers),
        "completion_tokens": sum(a[4] for a in answers),
        "total_tokens": sum(a[3] + a[4] for a in answers),
    }
    head = {"id": rid, "created": created, "model": tasks[0], "hybridcl_task": tasks}
    if not body.stream:
        choices = [
            {"index": k, **content(text), "finish_reason": reason, "logprobs": None}
            for k, (text, _, reason, _, _) in enumerate(answers)
        ]
        return {**head, "object": kind, "choices": choices, "usage": usage}
    chunk_kind = "chat.completion.chunk" if kind == "chat.completion" else kind

    def delta(text: str) -> dict:
        return {"delta": {"role": "assistant", "content": text}} if kind == "chat.completion" else {"text": text}

    def events():
        for k, (text, _, reason, _, _) in enumerate(answers):
            for part, finish in ((text, None), ("", reason)):
                choice = {"index": k, **delta(part), "finish_reason": finish, "logprobs": None}
                yield f"data: {json.dumps({**head, 'object': chunk_kind, 'choices': [choice]})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _error(exc: ApiError) -> JSONResponse:
    headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
    body = {"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": None}}
    return JSONResponse(body, status_code=exc.status, headers=headers)


def serve(
    run_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    seed: int | None = None,
    max_queue: int = 64,
    max_batch: int = 16,
    max_prompt_tokens: int | None = None,
    max_tokens: int = 512,
    grace: float = 30.0,
) -> None:
    """Serve ``run_dir`` until SIGTERM or Ctrl-C."""
    import uvicorn

    if host not in LOOPBACK and not api_key:
        raise ConfigError(
            f"--host {host} is reachable from other machines: give --api-key KEY (or HYBRIDCL_API_KEY) so "
            "that only clients with the key are answered"
        )
    for flag, value in (("--max-queue", max_queue), ("--max-batch", max_batch), ("--max-tokens", max_tokens)):
        if value < 1:
            raise ConfigError(f"{flag} = {value}: must be at least 1")
    if not Path(run_dir).is_dir():
        raise RunError(f"{run_dir} is not a run folder")
    engine = Engine(Path(run_dir), seed=seed, max_queue=max_queue, max_batch=max_batch).start()
    limits = Limits(max_prompt_tokens or engine.run.config.data.max_source_len, max_tokens)
    app = create_app(engine, api_key=api_key, limits=limits)
    graceful = max(1, round(grace))
    config = uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=graceful, log_level="warning")
    ready = f"hybridcl: serving {', '.join(engine.tasks)} and auto on http://{host}:{port}/v1"

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)  # listening, with SIGTERM handled: now say so
            print(ready, file=sys.stderr, flush=True)

        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn raises a caught SIGTERM again once it has shut down (exit status -15); a server
            # that drained its requests on SIGTERM has done what was asked and exits 0
            caught = (signal.SIGINT, signal.SIGTERM)
            before = {s: signal.signal(s, self.handle_exit) for s in caught}
            try:
                yield
            finally:
                for s, handler in before.items():
                    signal.signal(s, handler)

    server = Server(config)
    try:
        server.run()
    finally:
        engine.stop(timeout=grace)

"""The OpenAI-compatible HTTP face of the engine (Starlette): a personal model is named
"<setting>/<user_id>", as vLLM names a LoRA adapter a model.

  POST /v1/completions        {"model", "prompt", "max_tokens", "temperature", "top_p", "seed",
                               "stream", "ignore_eos" (vLLM's extension: run to max_tokens)}
  POST /v1/chat/completions   {"model", "messages", ...}: the prompt is the tokenizer's chat
                               template of the messages
  POST /v1/score              {"model", "prompt", "choices"?}: each choice's summed log-prob after
                               the prompt (default: the task's labels), the best one first-class
  GET  /v1/models, GET /health

Errors are OpenAI's JSON ({"error": {"message", "type", "code"}}): 400 for a malformed body or
a prompt too long, 404 for an unknown model, 429 (Retry-After) when too many requests wait, 503
while shutting down, 500 when a user's adapter file cannot be read. A client that goes away
cancels its request: its row is freed at the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from oppu_jax.errors import AdapterFormatError
from oppu_jax.serve.engine import Engine, Generate, Overloaded, Score, ShuttingDown, Ticket

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


@dataclasses.dataclass
class Service:
  """What the routes need of a served workdir (`source.open_workdir` builds it)."""

  engine: Engine
  setting: str
  users: Callable[[], list[str]]  # the user ids with an adapter, sorted
  has_user: Callable[[str], bool]
  encode_prompt: Callable[[str], list[int]]  # a prompt's ids as the model reads them
  encode_choice: Callable[[str], list[int]]  # a choice's ids as scored
  decode: Callable[[list[int]], str]
  chat: Callable[[list[dict]], str] | None  # messages -> prompt text; None: no chat template
  labels: tuple[str, ...] = ()  # the task's labels: /v1/score's default choices


class ApiError(Exception):
  def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
               code: str | None = None, headers: dict | None = None):
    super().__init__(message)
    self.status, self.kind, self.code, self.headers = status, kind, code, headers or {}

  def response(self) -> JSONResponse:
    return JSONResponse({"error": {"message": str(self), "type": self.kind, "param": None,
                                   "code": self.code}}, self.status, headers=self.headers)


def make_app(service: Service) -> Starlette:
  """The ASGI app; its lifespan starts the engine and, at shutdown, lets it finish what it has."""

  @contextlib.asynccontextmanager
  async def lifespan(app):
    service.engine.start()
    try:
      yield
    finally:
      await asyncio.to_thread(service.engine.stop)
      logging.info("stopped after %d finished requests", service.engine.stats["finished"]
                   + service.engine.stats["score_rows"])

  def route(handler):
    async def endpoint(request: Request):
      try:
        return await handler(service, request)
      except ApiError as e:
        return e.response()
    return endpoint

  return Starlette(routes=[
      Route("/v1/completions", route(_completions), methods=["POST"]),
      Route("/v1/chat/completions", route(_chat_completions), methods=["POST"]),
      Route("/v1/score", route(_score), methods=["POST"]),
      Route("/v1/models", route(_models), methods=["GET"]),
      Route("/health", route(_health), methods=["GET"]),
  ], lifespan=lifespan)


# ----------------------------------------------------------------------------------------------
# Routes


async def _completions(service: Service, request: Request):
  body = await _body(request)
  prompt = _field(body, "prompt", (str, list))
  if isinstance(prompt, list):  # one prompt as token ids; a list of prompts is not taken
    if not prompt or not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
      raise ApiError(400, "prompt: a string or one list of token ids (one prompt per request)")
    ids = list(prompt)
  else:
    ids = service.encode_prompt(prompt)
  return await _generate(service, request, body, ids, chat=False)


async def _chat_completions(service: Service, request: Request):
  body = await _body(request)
  messages = _field(body, "messages", list)
  if not messages or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                             and isinstance(m.get("content"), str) for m in messages):
    raise ApiError(400, "messages: a non-empty list of {\"role\", \"content\"} with string "
                        "content")
  if service.chat is None:
    raise ApiError(400, "this model has no chat template; use /v1/completions")
  ids = service.encode_prompt(service.chat(messages))
  return await _generate(service, request, body, ids, chat=True)


async def _score(service: Service, request: Request):
  body = await _body(request)
  user = _user(service, body)
  prompt = _field(body, "prompt", str)
  labels = body.get("choices", list(service.labels))
  if not isinstance(labels, list) or not labels or not all(isinstance(c, str) for c in labels):
    raise ApiError(400, "choices: a non-empty list of strings (this task has no labels to "
                        "default to)" if not service.labels else "choices: a list of strings")
  ids = service.encode_prompt(prompt)
  choices = tuple(tuple(service.encode_choice(c)) for c in labels)
  ticket = await _run(service, request, Score(user, ids, choices))
  scores = [float(s) for s in ticket.scores]
  best = max(range(len(labels)), key=scores.__getitem__)
  return JSONResponse({
      "object": "score", "model": body["model"], "created": int(time.time()),
      "choices": [{"index": i, "text": c, "logprob": s} for i, (c, s) in
                  enumerate(zip(labels, scores))],
      "best": labels[best], "usage": {"prompt_tokens": len(ids), "total_tokens": len(ids)}})


async def _models(service: Service, request: Request):
  del request
  return JSONResponse({"object": "list", "data": [
      {"id": f"{service.setting}/{u}", "object": "model", "created": 0, "owned_by": u}
      for u in service.users()]})


async def _health(service: Service, request: Request):
  del request
  return JSONResponse({"status": "ok", **service.engine.load(),
                       "stats": dict(service.engine.stats),
                       "adapters": dict(service.engine.tiers.counts)})


# ----------------------------------------------------------------------------------------------
# Generation, blocking or streamed


async def _generate(service: Service, request: Request, body: dict, ids: list[int], chat: bool):
  user = _user(service, body)
  cap = service.engine.config.max_new_tokens
  limit = body.get("max_completion_tokens", body.get("max_tokens"))
  default = cap if chat else min(DEFAULT_MAX_TOKENS, cap)  # chat: as long as the server allows
  req = Generate(user, ids, max_new_tokens=_int(limit, "max_tokens", default),
                 temperature=_number(body, "temperature", 1.0), top_p=_number(body, "top_p", 1.0),
                 seed=_int(body.get("seed"), "seed", 0) % 2**32,
                 ignore_eos=bool(body.get("ignore_eos", False)))
  if _int(body.get("n"), "n", 1) != 1:
    raise ApiError(400, "n: this server returns one choice per request")
  if body.get("stop") not in (None, [], ""):
    raise ApiError(400, "stop: stop sequences are not supported; generation ends at EOS or "
                        "max_tokens")
  head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
          "created": int(time.time()), "model": body["model"]}
  if body.get("stream"):
    return await _stream(service, request, req, head, chat)
  ticket = await _run(service, request, req)
  text = service.decode(ticket.tokens)
  choice = ({"index": 0, "message": {"role": "assistant", "content": text}} if chat else
            {"index": 0, "text": text, "logprobs": None})
  return JSONResponse({
      **head, "object": "chat.completion" if chat else "text_completion",
      "choices": [{**choice, "finish_reason": ticket.finish_reason}],
      "usage": _usage(ids, ticket)})


async def _run(service: Service, request: Request, req) -> Ticket:
  """Submits `req` and waits for its end; a client that disconnects cancels it."""
  loop = asyncio.get_running_loop()
  finished = loop.create_future()

  def listener(ticket, ids):
    if ids is None:
      loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(ticket))

  ticket = _submit(service, req, listener)
  watch = asyncio.ensure_future(_disconnected(request))
  try:
    await asyncio.wait({finished, watch}, return_when=asyncio.FIRST_COMPLETED)
  finally:
    if not ticket.done:
      service.engine.cancel(ticket)  # the client left (or this task was cancelled)
    watch.cancel()
  if not finished.done():
    raise ApiError(499, "the client closed the request", code="client_closed_request")
  if ticket.finish_reason == "error":  # the user's adapter file, or a bug: the server goes on
    unreadable = isinstance(ticket.error, AdapterFormatError)
    raise ApiError(500, f"{req.user}: {ticket.error}", kind="server_error",
                   code="adapter_unreadable" if unreadable else None)
  return ticket


async def _stream(service: Service, request: Request, req: Generate, head: dict, chat: bool):
  """Server-sent events, one per generated token, as OpenAI streams; [DONE] at the end."""
  loop = asyncio.get_running_loop()
  queue: asyncio.Queue = asyncio.Queue()
  ticket = _submit(service, req, lambda t, ids: loop.call_soon_threadsafe(queue.put_nowait, ids))
  kind = "chat.completion.chunk" if chat else "text_completion"

  def event(delta: str, finish: str | None) -> str:
    choice = ({"index": 0, "delta": {"content": delta} if delta or not finish else {}}
              if chat else {"index": 0, "text": delta, "logprobs": None})
    return f"data: {json.dumps({**head, 'object': kind, 'choices': [{**choice, 'finish_reason': finish}]})}\n\n"

  async def events():
    sent = ""
    try:
      while await queue.get() is not None:
        text = service.decode(ticket.tokens)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
          continue
        yield event(text[len(sent):], None)
        sent = text
      if ticket.finish_reason == "error":
        yield f"data: {json.dumps({'error': {'message': str(ticket.error)}})}\n\n"
      else:
        yield event(service.decode(ticket.tokens)[len(sent):], ticket.finish_reason)
      yield "data: [DONE]\n\n"
    finally:
      if not ticket.done:  # the client went away mid-stream
        service.engine.cancel(ticket)

  del request
  return StreamingResponse(events(), media_type="text/event-stream")


def _submit(service: Service, req, listener) -> Ticket:
  try:
    return service.engine.submit(req, listener)
  except Overloaded as e:
    raise ApiError(429, str(e), kind="rate_limit_error", code="overloaded",
                   headers={"Retry-After": str(max(1, round(e.retry_after)))}) from None
  except ShuttingDown as e:
    raise ApiError(503, str(e), kind="server_error", code="shutting_down",
                   headers={"Retry-After": "5"}) from None
  except ValueError as e:  # a request that can never run: too long, bad max_tokens, ...
    code = "context_length_exceeded" if "tokens; this server takes" in str(e) else None
    raise ApiError(400, str(e), code=code) from None


async def _disconnected(request: Request) -> None:
  while not await request.is_disconnected():
    await asyncio.sleep(0.05)


# ----------------------------------------------------------------------------------------------
# Request bodies


async def _body(request: Request) -> dict:
  try:
    body = json.loads(await request.body())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ApiError(400, f"the body is not JSON ({e})") from None
  if not isinstance(body, dict):
    raise ApiError(400, "the body must be a JSON object")
  return body


def _user(service: Service, body: dict) -> str:
  model = _field(body, "model", str)
  setting, _, user = model.partition("/")
  if setting != service.setting or not user or not service.has_user(user):
    raise ApiError(404, f"model {model!r} does not exist; models are "
                        f"'{service.setting}/<user_id>' (GET /v1/models lists them)",
                   kind="not_found_error", code="model_not_found")
  return user


def _field(body: dict, key: str, kind) -> Any:
  if key not in body:
    raise ApiError(400, f"{key}: required")
  if not isinstance(body[key], kind):
    raise ApiError(400, f"{key}: wrong type ({type(body[key]).__name__})")
  return body[key]


def _int(value, key: str, default: int) -> int:
  if value is None:
    return default
  if not isinstance(value, int) or isinstance(value, bool):
    raise ApiError(400, f"{key}: an integer, got {value!r}")
  return value


def _number(body: dict, key: str, default: float) -> float:
  value = body.get(key)
  if value is None:
    return default
  if not isinstance(value, (int, float)) or isinstance(value, bool):
    raise ApiError(400, f"{key}: a number, got {value!r}")
  return float(value)


def _usage(ids: list[int], ticket: Ticket) -> dict:
  return {"prompt_tokens": len(ids), "completion_tokens": len(ticket.tokens),
          "total_tokens": len(ids) + len(ticket.tokens)}

"""The HTTP API over a tiny model (token ids as text: "5 17 33"): OpenAI-shaped answers equal to
the engine's, streaming, and every error with its status and one-line JSON message."""

import json

import pytest
from starlette.testclient import TestClient

from oppu_jax.errors import AdapterFormatError
from oppu_jax.serve.app import Service, make_app
from oppu_jax.serve.engine import Engine, EngineConfig, Generate
from oppu_jax.serve.residency import AdapterTiers

USERS = ("u0", "u1", "u2")
LABELS = ("1", "2", "3")


def _read(adapters):
  def read(user):
    if user == "u2":
      raise AdapterFormatError("adapters/oppu_k0/u2/adapter_model.safetensors: not a readable "
                               "safetensors file")
    return adapters.user(int(user[1:]))
  return read


def _service(model, adapters, broken_u2=False, **config):
  read = _read(adapters) if broken_u2 else (lambda u: adapters.user(int(u[1:])))
  tiers = AdapterTiers(adapters.method, adapters.user(0), read, device_slots=2, host_capacity=4)
  config = EngineConfig(**{"slots": 4, "buckets": (16,), "max_new_tokens": 8, **config})
  engine = Engine(model, tiers, config, eos_id=-1, pad_id=0)
  ids = lambda text: [int(w) for w in text.split()]
  return Service(engine=engine, setting="oppu_k0", users=lambda: list(USERS),
                 has_user=lambda u: u in USERS, encode_prompt=ids,
                 encode_choice=lambda label: [int(label) + 10, 2],
                 decode=lambda toks: " ".join(map(str, toks)),
                 chat=lambda messages: " ".join(m["content"] for m in messages), labels=LABELS)


@pytest.fixture(scope="module")
def client(model, adapters):
  with TestClient(make_app(_service(model, adapters))) as c:
    yield c


def _alone(model, adapters, user, prompt, n):
  service = _service(model, adapters)
  service.engine.start()
  try:
    return service.engine.submit(Generate(user, prompt, n)).wait(120).tokens
  finally:
    service.engine.stop()


@pytest.mark.slow
def test_completions_chat_and_stream_answer_as_the_engine(client, model, adapters):
  want = " ".join(map(str, _alone(model, adapters, "u1", [5, 17, 33], 4)))
  body = {"model": "oppu_k0/u1", "prompt": "5 17 33", "max_tokens": 4, "temperature": 0}
  r = client.post("/v1/completions", json=body)
  assert r.status_code == 200, r.text
  out = r.json()
  assert out["object"] == "text_completion" and out["choices"][0]["text"] == want
  assert out["choices"][0]["finish_reason"] == "length"
  assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
  # Token ids as the prompt, and chat messages, reach the same ids.
  assert client.post("/v1/completions", json={**body, "prompt": [5, 17, 33]}).json()[
      "choices"][0]["text"] == want
  chat = client.post("/v1/chat/completions", json={
      "model": "oppu_k0/u1", "messages": [{"role": "user", "content": "5 17 33"}],
      "max_tokens": 4, "temperature": 0}).json()
  assert chat["object"] == "chat.completion"
  assert chat["choices"][0]["message"] == {"role": "assistant", "content": want}
  with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as s:
    lines = [line for line in s.iter_lines() if line]
  assert lines[-1] == "data: [DONE]"
  chunks = [json.loads(line[len("data: "):]) for line in lines[:-1]]
  assert "".join(c["choices"][0]["text"] for c in chunks) == want
  assert chunks[-1]["choices"][0]["finish_reason"] == "length"
  models = client.get("/v1/models").json()["data"]
  assert [m["id"] for m in models] == [f"oppu_k0/{u}" for u in USERS]


@pytest.mark.slow
def test_score_ranks_the_task_labels(client):
  r = client.post("/v1/score", json={"model": "oppu_k0/u2", "prompt": "5 17 33"})
  assert r.status_code == 200, r.text
  out = r.json()
  assert [c["text"] for c in out["choices"]] == list(LABELS)
  best = max(out["choices"], key=lambda c: c["logprob"])
  assert out["best"] == best["text"]
  other = client.post("/v1/score", json={"model": "oppu_k0/u0", "prompt": "5 17 33"}).json()
  assert [c["logprob"] for c in other["choices"]] != [c["logprob"] for c in out["choices"]]


@pytest.mark.parametrize("path, body, status, code", [
    ("/v1/completions", {"model": "oppu_k0/nobody", "prompt": "5"}, 404, "model_not_found"),
    ("/v1/completions", {"model": "other/u0", "prompt": "5"}, 404, "model_not_found"),
    ("/v1/completions", {"model": "oppu_k0/u0"}, 400, None),
    ("/v1/completions", {"model": "oppu_k0/u0", "prompt": " ".join(["5"] * 17)}, 400,
     "context_length_exceeded"),
    ("/v1/completions", {"model": "oppu_k0/u0", "prompt": "5", "max_tokens": 9}, 400, None),
    ("/v1/completions", {"model": "oppu_k0/u0", "prompt": "5", "temperature": "hot"}, 400, None),
    ("/v1/completions", {"model": "oppu_k0/u0", "prompt": "5", "n": 2}, 400, None),
    ("/v1/completions", {"model": "oppu_k0/u0", "prompt": ["a", "b"]}, 400, None),
    ("/v1/chat/completions", {"model": "oppu_k0/u0", "messages": [{"role": "user"}]}, 400, None),
    ("/v1/score", {"model": "oppu_k0/u0", "prompt": "5", "choices": []}, 400, None),
    ("/v1/score", {"model": "oppu_k0/u0", "prompt": " ".join(["5"] * 17)}, 400,
     "context_length_exceeded"),
])
def test_bad_requests_get_json_errors(client, path, body, status, code):
  r = client.post(path, json=body)
  assert r.status_code == status, r.text
  error = r.json()["error"]
  assert error["message"] and "\n" not in error["message"] and error["code"] == code


def test_a_body_that_is_not_json_is_a_400(client):
  r = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
  assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]


def test_overload_is_a_429_with_a_retry_hint(model, adapters):
  service = _service(model, adapters, max_waiting=0)
  with TestClient(make_app(service)) as c:
    r = c.post("/v1/completions", json={"model": "oppu_k0/u0", "prompt": "5"})
  assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
  assert r.json()["error"]["code"] == "overloaded"


def test_an_unreadable_adapter_is_a_500_for_its_user_only(model, adapters):
  with TestClient(make_app(_service(model, adapters, broken_u2=True))) as c:
    bad = c.post("/v1/completions", json={"model": "oppu_k0/u2", "prompt": "5", "max_tokens": 2})
    good = c.post("/v1/completions", json={"model": "oppu_k0/u1", "prompt": "5", "max_tokens": 2})
  assert bad.status_code == 500 and bad.json()["error"]["code"] == "adapter_unreadable"
  assert "u2/adapter_model.safetensors" in bad.json()["error"]["message"]
  assert good.status_code == 200

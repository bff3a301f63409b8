"""Asks a running server every test query of the run it serves, as a client would (the prompt
text, the user's model name), and compares its answers with the run's predictions file.

  python -m oppu_jax.serve --workdir=runs/lamp3 &
  python -m oppu_jax.serve.check --workdir=runs/lamp3 --url=http://127.0.0.1:8000/v1
  python -m oppu_jax.serve.check --workdir=runs/lamp3     # starts a server of its own, then stops it

A classification task's queries go to /v1/score (httpx), a generation task's to
/v1/completions through the `openai` client at temperature 0 (the run must have decoded
greedily). Prints how many answers equal the predictions and exits 1 if any differs.
"""

from __future__ import annotations

import contextlib
import json
import sys

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "The served run's workdir.")
_SETTING = flags.DEFINE_string("setting", "oppu_k0", "The served setting.")
_URL = flags.DEFINE_string("url", "", "The server's API base URL (empty: start `python -m "
                           "oppu_jax.serve` on the workdir on a free port, and stop it after).")
_LIMIT = flags.DEFINE_integer("limit", 0, "Ask only the first N queries (0: all).")


def main(argv) -> None:
  del argv
  from oppu_jax import logs
  from oppu_jax.errors import OppuError
  from oppu_jax.pipeline import experiment, predict
  from oppu_jax.pipeline.settings import parse_settings
  from oppu_jax.serve import source

  logs.quiet_libraries()
  try:
    config = source.run_config(_WORKDIR.value)
    exp = experiment.setup(config, _WORKDIR.value)
    setting = parse_settings(_SETTING.value)[0]
    with open(experiment.predictions_path(exp, setting)) as f:
      want = {g["id"]: g["output"] for g in json.load(f)["golds"]}
  except (OppuError, OSError) as e:
    sys.exit(f"error: {e}")
  queries = predict.query_texts(exp, setting, exp.test_users)
  queries = queries[:_LIMIT.value] if _LIMIT.value else queries
  scored = bool(exp.task.labels) and config.eval.classification == "score"
  if not scored and config.eval.decoding != "greedy":
    sys.exit(f"error: the run decoded with {config.eval.decoding}; the check asks greedily")
  with _server(_WORKDIR.value, _SETTING.value, _URL.value) as url:
    equal = _ask(url, exp, setting, queries, want, scored, config)
  print(f"{equal}/{len(queries)} answers equal predictions/{setting.name}.json "
        f"({'/v1/score' if scored else '/v1/completions'})")
  sys.exit(0 if equal == len(queries) else 1)


@contextlib.contextmanager
def _server(workdir: str, setting: str, url: str):
  """`url`, or the API URL of a server started here on `workdir` (stopped on the way out)."""
  if url:
    yield url
    return
  from oppu_jax.serve.spawn import running_server

  with running_server(workdir, f"--setting={setting}") as (_, base):
    yield f"{base}/v1"


def _ask(url, exp, setting, queries, want, scored, config) -> int:
  """Asks every query; prints each answer that differs; the number equal."""
  import httpx
  import openai

  client = openai.OpenAI(base_url=url, api_key="unused")
  equal = 0
  for index, qid, prompt in queries:
    model = f"{setting.name}/{exp.test_users[index].id}"
    if scored:
      r = httpx.post(f"{url}/score", json={"model": model, "prompt": prompt},
                     timeout=600)
      r.raise_for_status()
      got = r.json()["best"]
    else:
      got = client.completions.create(model=model, prompt=prompt, temperature=0,
                                      max_tokens=config.eval.max_new_tokens).choices[0].text
    equal += got.strip() == want[qid]
    if got.strip() != want[qid]:
      print(f"{qid} ({model}): server {got.strip()!r}, predictions {want[qid]!r}")
  return equal


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)

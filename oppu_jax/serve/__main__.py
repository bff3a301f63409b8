"""Serves a finished run's personal models over an OpenAI-compatible HTTP API.

  python -m oppu_jax.serve --workdir=runs/lamp3 [--setting=oppu_k0] [--port=8000]

Every request names its user's model, "<setting>/<user_id>"; requests of different users decode
together in one compiled step (oppu_jax/serve/engine.py). Ctrl-C (SIGINT) or SIGTERM stops
taking requests and finishes those in flight.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished run's workdir.")
_SETTING = flags.DEFINE_string("setting", "oppu_k0", "The personalized setting whose users' "
                               "adapters are served (adapters/<setting>/<user_id>).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on.")
_SLOTS = flags.DEFINE_integer("slots", 32, "Requests decoding together per prompt bucket (rows "
                              "of one compiled step; a step runs as many as are in use, rounded "
                              "up to a power of two).")
_BUCKETS = flags.DEFINE_list("prompt_buckets", ["32", "64", "128", "256", "512"],
                             "Prompt lengths (tokens) rows are padded to; the largest is the "
                             "longest prompt taken.")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 128, "The most tokens a request may generate.")
_DEVICE_ADAPTERS = flags.DEFINE_integer("device_adapters", 64, "Adapters resident on device (at "
                                        "least --slots, so that every row can hold another "
                                        "user).")
_HOST_ADAPTERS = flags.DEFINE_integer("host_adapters", 1024, "Adapters kept in host memory "
                                      "(least recently used ones are dropped).")
_MAX_WAITING = flags.DEFINE_integer("max_waiting", 256, "Waiting requests before new ones get "
                                    "429.")
_ONE_USER = flags.DEFINE_boolean("one_user_per_step", False, "Batch only the requests of one "
                                 "user at a time (the baseline of benchmarks/serve_bench.py).")


def main(argv) -> None:
  del argv
  if _WORKDIR.value is None:
    sys.exit("error: --workdir is required")
  import uvicorn

  from oppu_jax import logs

  from oppu_jax.errors import OppuError
  from oppu_jax.serve import app as app_lib, source
  from oppu_jax.serve.engine import EngineConfig

  logs.quiet_libraries()
  try:
    buckets = tuple(sorted(int(b) for b in _BUCKETS.value))
  except ValueError:
    sys.exit(f"error: --prompt_buckets: integers, got {','.join(_BUCKETS.value)}")
  for flag in (_SLOTS, _DEVICE_ADAPTERS, _HOST_ADAPTERS, _MAX_TOKENS, _MAX_WAITING):
    if flag.value < (0 if flag is _MAX_WAITING else 1):
      sys.exit(f"error: --{flag.name} must be positive, got {flag.value}")
  config = EngineConfig(slots=_SLOTS.value, buckets=buckets, max_new_tokens=_MAX_TOKENS.value,
                        max_waiting=_MAX_WAITING.value, one_user_per_step=_ONE_USER.value)
  try:
    service = source.open_workdir(_WORKDIR.value, _SETTING.value, config,
                                  device_slots=_DEVICE_ADAPTERS.value,
                                  host_capacity=_HOST_ADAPTERS.value)
  except OppuError as e:
    sys.exit(f"error: {e}")
  logging.info("serving %d users' %s models on http://%s:%d/v1 (models '%s/<user_id>')",
               len(service.users()), service.setting, _HOST.value, _PORT.value,
               service.setting)
  uvicorn.run(app_lib.make_app(service), host=_HOST.value, port=_PORT.value,
              log_level="warning", timeout_graceful_shutdown=None)


if __name__ == "__main__":
  app.run(main)

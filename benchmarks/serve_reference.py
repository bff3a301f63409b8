"""The serving benchmark's baseline: per-user adapters served the way HF PEFT users serve them, in
PyTorch, one request at a time, each under its user's adapter made active with `set_adapter`.

This is the reference pattern our JAX server is compared against: a base model (the run's
task-adapted base, merged once) wrapped in one `PeftModel`, each user's adapter read from the
run's adapters/<setting>/<user>/ on its first request (`load_adapter`), then greedy `generate`.
At most `max_loaded` adapters stay in memory (least recently used ones are deleted), as a server
of ~1,000 users must do. The run's task LoRA is an orbax checkpoint in our pytree format: our
hf_format writes it as an HF PEFT adapter so torch merges the same weights our pipeline merged.
"""

from __future__ import annotations

import collections
import gc
import os
import tempfile
import time
import types

from absl import app, flags

from oppu_jax.models.load import embedded_gguf_path
from oppu_jax.pipeline import experiment
from oppu_jax.pipeline.settings import parse_settings
from oppu_jax.serve.source import run_config


def run_reference(workdir: str, setting: str, requests: list[dict], threads: int = 2,
                  max_loaded: int = 64) -> dict:
  """requests: [{"user": user_id, "prompt_ids": list[int], "max_tokens": int, "ignore_eos"?:
  bool (run to max_tokens)}], served one after
  another in the given order. Returns {"load_seconds": float, "results": [{"user", "tokens":
  list[int] (generated ids, cut before EOS), "seconds": float (this request's wall time, adapter
  load included)}]}."""
  import peft as hf_peft
  import torch
  import transformers
  from transformers import AutoModelForCausalLM

  transformers.utils.logging.disable_progress_bar()
  torch.set_num_threads(threads)
  config = run_config(workdir)
  # The run's own resolution of a setting: its adapters' directory and its task-adapted base.
  run = types.SimpleNamespace(config=config, path=lambda *parts: os.path.join(workdir, *parts))
  chosen = parse_settings(setting)[0]

  start = time.perf_counter()
  path = experiment.input_path(config, config.model.path) or embedded_gguf_path()
  hf = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                            dtype=torch.float32)
  if config.task_adapt.enabled:
    checkpoint = os.path.abspath(os.path.join(
        workdir, "checkpoints", f"task_{experiment.base_of(run, chosen)}"))
    with tempfile.TemporaryDirectory() as tmp:
      _task_lora_as_hf(config, checkpoint, tmp)
      hf = hf_peft.PeftModel.from_pretrained(hf, tmp).merge_and_unload()
  tokenizer = experiment.load_tokenizer(config)
  eos, pad = tokenizer.eos_id, tokenizer.pad_id
  load_seconds = time.perf_counter() - start

  model, loaded, results = None, collections.OrderedDict(), []  # loaded: users, oldest use first
  for request in requests:
    user = request["user"]
    start = time.perf_counter()
    directory = experiment.adapter_dir(run, chosen, user)
    if model is None:  # the first request's adapter is the one the wrap loads
      model = hf_peft.PeftModel.from_pretrained(hf, directory, adapter_name=user)
    elif user not in loaded:
      model.load_adapter(directory, adapter_name=user)
    loaded[user] = True
    loaded.move_to_end(user)
    model.set_adapter(user)
    # Evict after the switch: PEFT refuses to delete the active adapter, and `user` is the newest.
    while len(loaded) > max_loaded:
      model.delete_adapter(loaded.popitem(last=False)[0])
    ids = torch.tensor([request["prompt_ids"]])
    with torch.inference_mode():
      # An explicit mask: pad == eos for SmolLM2, and generate would mask a prompt's EOS ids.
      out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                           max_new_tokens=request["max_tokens"], do_sample=False, use_cache=True,
                           min_new_tokens=request["max_tokens"] if request.get("ignore_eos") else 0,
                           eos_token_id=eos, pad_token_id=pad)
    tokens = out[0, ids.shape[1]:].tolist()
    if not request.get("ignore_eos"):
      tokens = tokens[:tokens.index(eos)] if eos in tokens else tokens
    results.append({"user": user, "tokens": tokens, "seconds": time.perf_counter() - start})
  return {"load_seconds": load_seconds, "results": results}


def _task_lora_as_hf(config, checkpoint: str, directory: str) -> None:
  """The task LoRA checkpoint (our pytree, orbax) written to `directory` as an HF PEFT adapter,
  restored as training.merge_task_lora restores it."""
  import jax
  import numpy as np
  import orbax.checkpoint as ocp

  from oppu_jax.peft import hf_format, method as method_lib
  from oppu_jax.peft.lora import Lora

  ours = experiment.load_model(config)  # for its weight table and config: our names and shapes
  table = ours.weight_table()
  lora = Lora.from_config(config.task_adapt, method_lib.BuildContext(
      table=table, key="config.task_adapt"))
  like = jax.tree.map(np.asarray, lora.init(table, jax.random.PRNGKey(0)))
  adapter = ocp.StandardCheckpointer().restore(checkpoint, like)
  hf_format.save_adapter(directory, lora, adapter, table, model_config=ours.config)
  del ours, adapter, like  # the JAX weights are not needed again: give their memory back
  gc.collect()
  jax.clear_caches()


def main(argv):
  del argv
  f = flags.FLAGS
  root = os.path.join(f.workdir, "adapters", f.setting)
  users = sorted(u for u in os.listdir(root)
                 if os.path.exists(os.path.join(root, u, "adapter_config.json")))
  prompt = experiment.load_tokenizer(run_config(f.workdir)).encode("Rate this review: great product")
  requests = [{"user": users[i % len(users)], "prompt_ids": prompt, "max_tokens": f.max_tokens}
              for i in range(f.n)]
  out = run_reference(f.workdir, f.setting, requests, threads=f.threads)
  print(f"load: {out['load_seconds']:.2f} s")
  for r in out["results"]:
    print(f"{r['user']}: {r['seconds']:.2f} s {r['tokens']}")


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "a finished run's workdir", required=True)
  flags.DEFINE_string("setting", "oppu_k0", "a personal setting (its adapters are served)")
  flags.DEFINE_integer("n", 4, "requests, over the setting's users in turn")
  flags.DEFINE_integer("max_tokens", 8, "new tokens per request")
  flags.DEFINE_integer("threads", 2, "torch threads")
  app.run(main)

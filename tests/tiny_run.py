"""A tiny run config: the task's embedded recipe on a few generated users, for a tiny model."""

from oppu_jax import config as base_config


def tiny_config(task: str, model_dir: str, **overrides):
  c = base_config.for_task(task)
  c.progress = False
  c.model.path = model_dir
  c.model.tokenizer = ""  # the tiny checkpoint has none: the embedded GGUF's is used
  c.model.compute_dtype = "float32"
  c.data.num_test_users = 3
  c.data.synth.num_users = 6
  c.data.synth.history_min = 4
  c.data.synth.history_max = 7
  c.data.synth.queries_per_user = 2
  c.data.synth.text_words = 8
  c.task_adapt.epochs = 1
  c.task_adapt.batch_size = 8
  c.train.epochs = 1
  c.train.slots = 2
  c.eval.max_new_tokens = 6
  c.model.cutoff = 384
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c

"""Every compiled program of a run, traced for a model and a mesh without running it.

Each program is built by the code a run executes (the trainer's step, the scorer's batch, the
decoder's loop), from batches that the model's own conventions make out of stand-in text of the
recipe's lengths; only the weights and devices are abstract. So what compiles here is what a
run on that chip compiles.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from oppu_jax.eval import decode, score
from oppu_jax.models.decoding import Decoding
from oppu_jax.peft import method as method_lib
from oppu_jax.peft.lora import Lora
from oppu_jax.peft.stack import UserAdapters
from oppu_jax.train import multi_user
from oppu_jax.train.user_batches import UserBatches, plan_user

TRAIN_METHODS = ("lora", "ia3", "prompt_tuning")
TRAINING = ("task_adaptation",) + tuple(f"users_step[{m}]" for m in TRAIN_METHODS)
PROGRAMS = TRAINING + ("score", "greedy", "beam", "pag")


@dataclasses.dataclass(frozen=True)
class Recipe:
  """What a run's programs are compiled for (from the run's config; lengths in tokens)."""

  config: ml_collections.ConfigDict  # the run's config (peft, task_adapt, train, eval, profile)
  prompt_tokens: int  # a training prompt (decoder-only: the whole sequence is cut to the cutoff)
  answer_tokens: int  # a training answer (encoder-decoder: the decoder's target)
  labels: int = 5  # label strings the scorer compares (LaMP_3: 1..5)
  profile_prompt_tokens: int = 1024  # a PAG prompt (the user's history items)

  @property
  def max_steps(self) -> int:  # the learning-rate table's width: a user's steps
    return 1000


@dataclasses.dataclass(frozen=True)
class Program:
  name: str
  trace: Callable[[], Any]  # -> jax.stages.Traced
  loop_trips: int  # a while loop's iterations (decoding: at most max_new_tokens); 0: none
  users: int  # adapters the program holds (slots, or the rows' users)
  shape: str  # the batch, for the table
  rows: int  # a step's rows per user (training: batch_size x grad_accum), or the batch's rows
  split: int  # what the users axis splits: the slots (users steps) or the batch's rows

  def devices_working(self, mesh) -> int:
    """Devices that share the work: the users axis splits `split` only where it divides it
    (sharding/mesh.py keeps the rest whole on every users position, computed there again)."""
    users, model = mesh.shape["users"], mesh.shape["model"]
    return model * (users if self.split % users == 0 else 1)


class _Words:
  """A stand-in tokenizer: one token per word, so n words are n tokens."""

  def __init__(self, model_config):
    self.eos_id, self.pad_id = model_config.eos_id, model_config.pad_id
    self.input_bos_id = model_config.bos_id

  def encode(self, text: str) -> list[int]:
    return [3 + i % 97 for i in range(len(text.split()))]

  def encode_prompt(self, text: str, max_len: int | None = None) -> list[int]:
    ids = self.encode(text)
    head = [] if self.input_bos_id is None else [self.input_bos_id]
    return head + ids[max(len(ids) - ((max_len or len(ids) + 1) - len(head)), 0):]


def _text(n: int) -> str:
  return " ".join(["w"] * n)


def train_batches(model, recipe: Recipe, batch_size: int, slots: int, grad_accum: int = 1):
  """The stacked [U, (A,) B, ...] batch of one step, as the trainer builds it for users whose
  examples have the recipe's lengths; and its (T, K[, S]) shape."""
  c = recipe.config
  tok = _Words(model.config)
  example = model.conventions.example(_text(recipe.prompt_tokens), _text(recipe.answer_tokens),
                                      tok, c.model.cutoff)
  plan = plan_user("u", [example] * (batch_size * grad_accum), batch_size=batch_size, epochs=1,
                   seq_buckets=tuple(c.model.seq_buckets),
                   target_buckets=tuple(c.model.target_buckets), grad_accum=grad_accum)
  one = UserBatches(plan, 0, model.config.pad_id)(0)
  return {k: np.stack([v] * slots) for k, v in one.items()}, plan.shape_key


def _method(config_node, model, name: str | None = None, key: str = "config.peft"):
  node = config_node.copy_and_resolve_references()
  if name:
    node.method = name
  # Prompt tuning starts from a task instruction's tokens: any text of its length will do.
  return method_lib.build(node, table=model.weight_table(), key=key,
                          encode=_Words(model.config).encode,
                          instruction=_text(node.get("num_virtual_tokens", 1)))


def _stacked(model, method, users: int) -> UserAdapters:
  table = model.weight_table()
  embed = model.embed.get_value()
  one = jax.eval_shape(lambda e: method.init(table, jax.random.PRNGKey(0), e), embed)
  return jax.eval_shape(lambda: UserAdapters.like(method, one, users))


def train_config(recipe: Recipe, slots: int) -> multi_user.TrainConfig:
  t = recipe.config.train
  return multi_user.TrainConfig(slots=slots, users_per_pass=slots, clip_norm=t.clip_norm,
                                weight_decay=t.weight_decay)


def users_step(model, recipe: Recipe, method: str, slots: int, mesh, remat: bool) -> Program:
  c = recipe.config
  peft = _method(c.peft, model, method)
  batches, shape = train_batches(model, recipe, c.train.batch_size, slots, c.train.grad_accum)
  return Program(
      f"users_step[{method}]",
      lambda: multi_user.trace_step(model, peft, train_config(recipe, slots), batches, mesh=mesh,
                                    max_steps=recipe.max_steps, remat=remat),
      0, slots, _shape(c.train.batch_size, shape, c.train.grad_accum),
      c.train.batch_size * c.train.grad_accum, slots)


def task_adaptation(model, recipe: Recipe, mesh, remat: bool) -> Program:
  c = recipe.config
  lora = Lora.from_config(c.task_adapt, method_lib.BuildContext(table=model.weight_table(),
                                                                key="config.task_adapt"))
  batches, shape = train_batches(model, recipe, c.task_adapt.batch_size, 1)
  return Program(
      "task_adaptation",
      lambda: multi_user.trace_step(model, lora, train_config(recipe, 1), batches, mesh=mesh,
                                    max_steps=recipe.max_steps, remat=remat,
                                    data_parallel=mesh is not None),
      0, 1, _shape(c.task_adapt.batch_size, shape), c.task_adapt.batch_size,
      c.task_adapt.batch_size)


def scoring(model, recipe: Recipe, users: int, mesh) -> Program:
  c = recipe.config
  tok = _Words(model.config)
  rows_n = c.eval.batch_size
  choices = [model.conventions.choice(str(i + 1), tok) for i in range(recipe.labels)]
  layout = model.conventions.choice_layout(choices)
  prompt = model.conventions.query(_text(recipe.prompt_tokens), tok, c.model.cutoff,
                                   c.eval.max_new_tokens)
  length = score._bucket(len(prompt) + layout.extra, score.DEFAULT_BUCKETS)
  packed = layout.pack([(i % users, prompt) for i in range(rows_n)], rows_n, length,
                       model.config.pad_id)
  row_users = packed.pop("users")
  adapters = _stacked(model, _method(c.peft, model), users)
  return Program("score", lambda: score.trace_batch(model, adapters, row_users, packed,
                                                    layout.shared, mesh),
                 0, users, f"{rows_n} x {length}, {recipe.labels} labels", rows_n, rows_n)


def decoding(model, recipe: Recipe, users: int, mesh, method: str) -> Program:
  c = recipe.config
  tok = _Words(model.config)
  d = Decoding.from_config(c.eval, seed=0)
  d = dataclasses.replace(d, method=method)
  prompt = model.conventions.query(_text(recipe.prompt_tokens), tok, c.model.cutoff,
                                   c.eval.max_new_tokens)
  return _decoding_program(model, method, _stacked(model, _method(c.peft, model), users), prompt,
                           c.eval.batch_size, d, users, mesh)


def pag(model, recipe: Recipe, mesh) -> Program:
  """The PAG profile writer's generation (the base alone, greedy, long prompts)."""
  c = recipe.config
  d = Decoding(max_new_tokens=c.profile.max_new_tokens, method="greedy",
               batch_size=c.eval.batch_size)
  prompt = list(range(3, 3 + recipe.profile_prompt_tokens))
  return _decoding_program(model, "pag", None, prompt, c.eval.batch_size, d, 0, mesh)


def _decoding_program(model, name, adapters, prompt, rows_n, d: Decoding, users, mesh):
  bucket = min(b for b in d.prompt_buckets if b >= len(prompt))
  tokens = np.full((rows_n, bucket), model.config.pad_id, np.int32)
  tokens[:, bucket - len(prompt):] = prompt
  mask = tokens != model.config.pad_id
  mask[:, bucket - len(prompt):] = True
  row_users = np.arange(rows_n, dtype=np.int32) % max(users, 1)
  beams = f", {d.num_beams} beams" if d.method == "beam" else ""
  return Program(
      name,
      lambda: decode.trace_batch(model, adapters, row_users, tokens, mask, d,
                                 eos_id=model.config.eos_id, pad_id=model.config.pad_id,
                                 mesh=mesh),
      d.max_new_tokens, users, f"{rows_n} x {bucket} + {d.max_new_tokens} new{beams}", rows_n,
      rows_n)


def _shape(batch_size: int, shape_key: tuple[int, ...], grad_accum: int = 1) -> str:
  t, k, *s = shape_key
  accum = f"{grad_accum} x " if grad_accum > 1 else ""
  return f"{accum}{batch_size} x {(str(s[0]) + '/') if s else ''}{t}, {k} targets"


def build(name: str, model, recipe: Recipe, *, slots: int, mesh, remat: bool) -> Program:
  """The program called `name` (PROGRAMS) at `slots` users."""
  if name == "task_adaptation":
    return task_adaptation(model, recipe, mesh, remat)
  if name.startswith("users_step["):
    return users_step(model, recipe, name[len("users_step["):-1], slots, mesh, remat)
  if name == "score":
    return scoring(model, recipe, slots, mesh)
  if name in ("greedy", "beam"):
    return decoding(model, recipe, slots, mesh, name)
  if name == "pag":
    return pag(model, recipe, mesh)
  raise ValueError(f"unknown program {name!r}; choose from {', '.join(PROGRAMS)}")

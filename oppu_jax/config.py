"""The one base config: `get_config()` holds every default, `TASK_DIFFERENCES` what each LaMP
task changes for the embedded model, `PAPER_TABLE_4` the OPPU paper's per-task values for
Llama-2-7B, `STUDY_PAPER` / `STUDY_EMBEDDED` the PEFT-vs-RAG study's, and `for_task(name,
recipe)` (what configs/lampN.py and configs/study.py return) applies one of them. Every field can
be overridden on the command line: `--config.train.epochs=3`.

The OPPU recipes (the study's are described next to their tables below):
- "embedded" (the default): SmolLM2-135M-Instruct on a 2-core CPU. A learning rate of 3e-3 in
  both stages (the paper's 1e-5, meant for a 7B model, leaves a 135M LoRA where it started in a
  user's 10-30 steps). Per task the paper's epochs, regularisation and batch size capped at 4
  (the paper's 16 would give a user with 12 history items one step per epoch), except LaMP_3:
  5 epochs of batch 4, tuned on generated LaMP_3 data with data seeds 10 and 11 (not the
  reported seeds 0-2), where the paper's 3 epochs of 3 and 4 epochs of 4 left OPPU's MAE higher
  (configs/lamp3.py).
- "meaning": `--config=configs/lampN.py:meaning` (LaMP_2M, LaMP_3, LaMP_5) — the embedded recipe
  on the second kind of generated data, cues by meaning (MEANING_DATA below).
- "paper": `--config=configs/lampN.py:paper` — Table 4 as published (lr 1e-5, the per-task epochs,
  batch sizes and R2 regularisation), task adaptation as the reference's task_LoRA.py (3 epochs,
  batch 16, lr 1e-4) and 100 test users. Meant for a 7B checkpoint: add
  `--config.model.path=/models/llama-2-7b-hf`.
"""

import difflib
import functools
import os

import ml_collections

from oppu_jax.errors import ConfigError, DataError

# OPPU paper Table 4 (Appendix A), Llama-2-7B: LoRA rank 8 on W_q and W_v, lr 1e-5 for every task;
# per task the epochs, the batch size and "R2 reg.", read as AdamW's weight decay (the reference
# passes weight_decay=1e-2 to its trainer). LaMP_6 is not in the paper (private data): LaMP_4's.
PAPER_TABLE_4 = {
    "LaMP_1": {"train.epochs": 3, "train.batch_size": 16, "train.weight_decay": 1e-2},
    "LaMP_2N": {"train.epochs": 3, "train.batch_size": 16, "train.weight_decay": 1e-2},
    "LaMP_2M": {"train.epochs": 3, "train.batch_size": 4, "train.weight_decay": 1e-2},
    "LaMP_3": {"train.epochs": 3, "train.batch_size": 3, "train.weight_decay": 1e-2},
    "LaMP_4": {"train.epochs": 2, "train.batch_size": 8, "train.weight_decay": 1e-1},
    "LaMP_5": {"train.epochs": 2, "train.batch_size": 4, "train.weight_decay": 1e-1},
    "LaMP_6": {"train.epochs": 2, "train.batch_size": 8, "train.weight_decay": 1e-1},
    "LaMP_7": {"train.epochs": 2, "train.batch_size": 8, "train.weight_decay": 1e-1},
}
PAPER_COMMON = {
    "train.learning_rate": 1e-5, "peft.rank": 8, "peft.targets": ("q", "v"),
    "task_adapt.epochs": 3, "task_adapt.batch_size": 16, "task_adapt.learning_rate": 1e-4,
    "data.num_test_users": 100,
}

# The embedded model's values that differ from the defaults below, per task: the paper's epochs
# and weight decay, batches of at most 4 (the defaults: 2 epochs, batch 4, weight decay 1e-2);
# LaMP_3's 5 epochs are tuned (see the docstring).
TASK_DIFFERENCES = {
    "LaMP_1": {"train.epochs": 3},
    "LaMP_2N": {"train.epochs": 3},
    "LaMP_2M": {"train.epochs": 3},
    "LaMP_3": {"train.epochs": 5},
    "LaMP_4": {"train.weight_decay": 1e-1},
    "LaMP_5": {"train.weight_decay": 1e-1},
    "LaMP_6": {"train.weight_decay": 1e-1},
    "LaMP_7": {"train.weight_decay": 1e-1},
}
# The PEFT-vs-RAG study (its Appendix B), FlanT5-XXL: LoRA r in {8, 16, 32, 64} (the rank is the
# setting's: peft_r8..r64), alpha 32, dropout 0.1 on q, k, v (every T5 stack: encoder, decoder,
# cross-attention); AdamW lr 5e-4, weight decay 1e-4, 5 % warm-up, linear decay, batch 16 (4 x 4
# accumulated), 50 epochs; input 512 / output 128 tokens, beam search 4; RAG with k = 4; CONVERT
# training pairs (its Table 4); no task adaptation; every user with test queries gets an adapter.
STUDY_PAPER = {
    "settings": "study", "train.learning_rate": 5e-4, "train.weight_decay": 1e-4,
    "train.warmup_ratio": 0.05, "train.batch_size": 4, "train.grad_accum": 4, "train.epochs": 50,
    "peft.method": "lora", "peft.alpha": 32.0, "peft.dropout": 0.1, "peft.targets": ("q", "k", "v"),
    "model.cutoff": 512, "eval.max_new_tokens": 128, "eval.decoding": "beam", "eval.num_beams": 4,
    "data.history_mode": "convert", "task_adapt.enabled": False, "data.num_test_users": 0,
}
# The same protocol on the embedded SmolLM2 and a 2-core CPU (`study_embedded`, the default of
# configs/study.py). Departures, each for time on this machine: 3 epochs, not 50; batch 4 without
# accumulation (a user's 12-32 history items would give one or two optimizer steps per epoch at
# 16); lr 1e-3 (5e-4 is for FlanT5-XXL; the OPPU recipe's 3e-3 is for alpha = rank); 32 new tokens
# and greedy decoding (beam 4 costs ~4x per generated token); the 8 most active users, not all.
STUDY_EMBEDDED = {
    **STUDY_PAPER, "train.learning_rate": 1e-3, "train.batch_size": 4, "train.grad_accum": 1,
    "train.epochs": 3, "eval.max_new_tokens": 32, "eval.decoding": "greedy",
    "data.num_test_users": 8,
}
# The analyses' data (`configs/analysis.py`, recipe "analysis"): the embedded recipe on generated
# data whose users spread over history lengths (4..48 items, uniform rather than long-tailed),
# with 12 test users evenly spaced over that range, so the activity buckets and the profile-size
# regression have short and long histories to compare.
ANALYSIS_DATA = {
    "data.synth.num_users": 36, "data.synth.history_min": 4, "data.synth.history_max": 48,
    "data.synth.long_tail": False, "data.synth.queries_per_user": 4,
    "data.num_test_users": 12, "data.test_users": "spread",
}
# oppu_jax/data/synth_meaning.py's data: 12 test users of 4 queries; task adaptation learns from
# (num_users - num_test_users) x queries_per_user = 64 pairs (raise data.synth.num_users for more).
MEANING_DATA = {
    "data.synth.kind": "meaning", "data.synth.shift": 1.0, "data.synth.noise": 0.15,
    "data.synth.num_users": 28, "data.synth.queries_per_user": 4, "data.num_test_users": 12,
}
RECIPES = ("embedded", "paper", "study", "study_embedded", "analysis", "meaning")

# Keys with a fixed set of values, checked before a run starts.
CHOICES = {
    "data.format": ("auto", "official", "oppu"),
    "data.history_mode": ("oppu", "aligned", "text", "convert", "input_only", "output_only"),
    "data.test_users": ("most_active", "spread"),
    "data.random_history": ("corpus", "own"),
    "model.backend": ("auto", "cpu", "xla"),
    "train.schedule": ("auto", "refill", "exact"),
    "train.remat": ("auto", "always", "never"),
    "eval.classification": ("score", "generate"),
    "eval.decoding": ("greedy", "sample", "beam"),
    "profile.template": ("auto", "chat", "vicuna"),
    "analysis.gain": ("signed", "sign"),
    "cold_start.adapter": ("base", "hyper"),
    "data.synth.kind": ("words", "meaning"),
}


def for_task(name: str, recipe: str | None = None) -> ml_collections.ConfigDict:
  """The base config with `name`'s values of `recipe` ("embedded" when None or "")."""
  if name not in TASK_DIFFERENCES:
    raise ConfigError(f"config.task: unknown {name!r}; expected one of "
                      f"{', '.join(TASK_DIFFERENCES)}")
  recipe = recipe or "embedded"
  if recipe not in RECIPES:
    raise ConfigError(f"unknown recipe {recipe!r}; expected one of {', '.join(RECIPES)}")
  c = get_config()
  c.task = name
  c.recipe = recipe
  changes = {"embedded": TASK_DIFFERENCES[name], "paper": {**PAPER_COMMON, **PAPER_TABLE_4[name]},
             "study": STUDY_PAPER, "study_embedded": STUDY_EMBEDDED,
             "analysis": {**TASK_DIFFERENCES[name], **ANALYSIS_DATA},
             "meaning": {**TASK_DIFFERENCES[name], **MEANING_DATA}}[recipe]
  for key, value in changes.items():
    _check_known(c, key)
    section, _, leaf = key.rpartition(".")
    (c[section] if section else c)[leaf] = value
  return c


def _check_known(c: ml_collections.ConfigDict, key: str) -> None:
  """ConfigError for a dotted key the base config lacks: an unlocked ConfigDict would add it as a
  new field that nothing reads, and the recipe's value would be silently lost."""
  node = c
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      close = difflib.get_close_matches(part, known, n=1)
      hint = f"; did you mean {close[0]}?" if close else ""
      raise ConfigError(f"config.{key}: unknown key{hint}")
    node = node[part]


def check_choice(key: str, value) -> None:
  """ConfigError unless `value` is one of CHOICES[key]: the one place these values are checked
  (config.check, and the dataclasses built from the config for library callers)."""
  if value not in CHOICES[key]:
    raise ConfigError(f"config.{key}: unknown {value!r}; expected one of "
                      f"{', '.join(CHOICES[key])}")


def check(c: ml_collections.ConfigDict) -> None:
  """Raises ConfigError, naming the key, for a value no run can use."""
  from oppu_jax.data import tasks  # here: configs/*.py import this module, keep that light

  try:
    tasks.get_task(c.task)
  except DataError as e:
    raise ConfigError(f"config.task: {e}") from None
  if c.model.cutoff <= c.eval.max_new_tokens:
    raise ConfigError(f"config.model.cutoff: {c.model.cutoff} leaves no room for a prompt before "
                      f"config.eval.max_new_tokens={c.eval.max_new_tokens} generated tokens")
  for key, what in (("model.path", "an HF model directory or a .gguf file; '' = the embedded "
                     "SmolLM2"), ("model.tokenizer", "an HF directory or a .gguf file; '' = the "
                     "model's own"), ("data.path", "a LaMP directory; '' = generate data"),
                    ("profile.model_path", "a chat model's HF directory or .gguf file; '' = the "
                     "run's base")):
    section, leaf = key.split(".")
    path = c[section][leaf]
    if path and "://" not in path and not os.path.exists(path):  # store URLs: storage.py
      raise ConfigError(f"config.{key}: {path!r} does not exist ({what})")
  if c.retrieval.dense_model and not os.path.exists(c.retrieval.dense_model):
    raise ConfigError(f"config.retrieval.dense_model: {c.retrieval.dense_model!r} does not "
                      "exist (a BERT directory such as Contriever, or '' for the embedded MiniLM)")
  bad = [r for r in c.retrieval.rspg_candidates if r not in ("bm25", "recency", "dense")]
  if bad or not c.retrieval.rspg_candidates:
    raise ConfigError(f"config.retrieval.rspg_candidates: {list(c.retrieval.rspg_candidates)}; "
                      "choose among bm25, recency, dense")
  for key in CHOICES:
    check_choice(key, functools.reduce(lambda node, part: node[part], key.split("."), c))
  if not c.data.path:
    from oppu_jax.data import synth  # here: configs/*.py import this module, keep that light
    synth.check_kind(tasks.get_task(c.task).name, c.data.synth.kind)
  _check_continual(c.continual)


def _check_continual(u: ml_collections.ConfigDict) -> None:
  from oppu_jax.data.types import date_key

  if u.since and date_key(u.since) is None:
    raise ConfigError(f"config.continual.since: {u.since!r} is no date (e.g. 2018-06-01)")
  if u.last_items < 0 or (u.since and u.last_items):
    raise ConfigError(f"config.continual.last_items: {u.last_items}; a count of items >= 0, and "
                      "not together with config.continual.since (one way to say which items are "
                      "new)")


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "LaMP_3"
  c.recipe = "embedded"  # which per-task values for_task applied (a record; see the docstring)
  c.seed = 0
  # Table 1 settings to run, comma-separated, or "all" (see oppu_jax/pipeline/settings.py).
  c.settings = "non_personalized,oppu_k0"
  c.overwrite = False  # replace a workdir that holds a run with another config
  c.progress = True  # progress bars
  # A jax.profiler trace of a window of each stage (its steps or query batches skip+1 ..
  # skip+steps) into trace.dir/<stage>/, for TensorBoard or Perfetto; timings.json is always
  # written. benchmarks/pipeline_profile.py reads them into a per-stage breakdown.
  c.trace = ml_collections.ConfigDict()
  c.trace.dir = ""  # "" = no trace
  c.trace.skip = 1  # the first step compiles (an evaluation has few batches: trace early)
  c.trace.steps = 3

  c.data = ml_collections.ConfigDict()
  c.data.path = ""  # an official LaMP or OPPU-processed directory; "" = generate into workdir
  c.data.format = "auto"  # auto | official | oppu
  # Which splits to load, comma-separated ("dev", "dev,test"; OPPU's layout: "test", "others");
  # "" = every split present. A split without golds (LaMP's test) is predicted, not scored.
  c.data.split = ""
  # The N most active users get their own adapter (OPPU: 100); 0: every user with test queries
  # (the PEFT-vs-RAG study's protocol).
  c.data.num_test_users = 8
  c.data.test_users = "most_active"  # most_active (OPPU) | spread (over history lengths)
  c.data.max_task_users = 0  # cap on users for task adaptation (0 = all the others)
  c.data.max_words = 768  # per history field, as the reference cuts
  c.data.history_mode = "oppu"  # oppu | aligned | text | convert (prompts.history_to_pairs)
  # Table 1's random_history draws its items from: corpus (every user's history items, as OPPU's
  # App. D says) | own (the query's user's history only).
  c.data.random_history = "corpus"
  # The generator, when data.path is empty.
  c.data.synth = ml_collections.ConfigDict()
  c.data.synth.num_users = 40
  c.data.synth.history_min = 12
  c.data.synth.history_max = 32
  c.data.synth.long_tail = True  # history lengths: Pareto from history_min (else uniform)
  c.data.synth.queries_per_user = 6
  c.data.synth.text_words = 14
  c.data.synth.shift = 0.0
  c.data.synth.noise = 0.1
  c.data.synth.kind = "words"  # words (synth.py; text_words) | meaning (synth_meaning.py)

  c.model = ml_collections.ConfigDict()
  c.model.path = ""  # HF directory or .gguf; "" = the embedded SmolLM2
  c.model.tokenizer = ""  # HF directory or .gguf; "" = the model's own (embedded GGUF if none)
  c.model.param_dtype = "bfloat16"  # frozen bf16 weights: the fast path (the reference trains bf16)
  c.model.compute_dtype = "bfloat16"  # bf16 matmul inputs, f32 accumulation (fast on this CPU)
  c.model.backend = "auto"  # auto | cpu (XLA:CPU workarounds) | xla (plain); read by the loader
  c.model.remat = False  # True: always recompute activations (else train.remat decides)
  c.model.cutoff = 512  # tokens per training sequence (reference: 2048)
  c.model.seq_buckets = (64, 80, 96, 112, 128, 160, 192, 256, 384, 512, 1024, 2048)
  c.model.target_buckets = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)

  # Stage 1: the base LLM's task adaptation (LoRA on the other users' queries, then merged).
  c.task_adapt = ml_collections.ConfigDict()
  c.task_adapt.enabled = True
  c.task_adapt.targets = ("q", "k", "v")
  c.task_adapt.rank = 8
  c.task_adapt.alpha = 8.0
  c.task_adapt.dropout = 0.05
  c.task_adapt.learning_rate = 3e-3
  c.task_adapt.batch_size = 16
  c.task_adapt.epochs = 2
  c.task_adapt.min_steps = 0  # N > 0: whole epochs added until N steps (a small train split)
  c.task_adapt.k = 1  # retrieved items in the R and P variants' training prompts
  # True: one R (and P) base per k the settings use, trained with that k (the paper's top-k);
  # False: one R and one P base for every k, trained with task_adapt.k (less training).
  c.task_adapt.per_k = False
  # Preemption: a checkpoint every this many steps (0 = none); a rerun continues bit for bit.
  c.task_adapt.checkpoint_every = 200

  # Stage 2: one PEFT per user.
  c.peft = ml_collections.ConfigDict()
  c.peft.method = "lora"  # lora | ia3 | prompt_tuning
  c.peft.targets = ("q", "v")
  c.peft.rank = 8
  c.peft.alpha = 8.0
  c.peft.dropout = 0.05
  c.peft.num_virtual_tokens = 20

  c.train = ml_collections.ConfigDict()
  c.train.learning_rate = 3e-3
  c.train.weight_decay = 1e-2
  c.train.clip_norm = 0.3
  c.train.warmup_ratio = 0.1
  c.train.batch_size = 4  # rows per micro-batch
  c.train.grad_accum = 1  # micro-batches per optimizer step (effective batch: their product)
  c.train.epochs = 2
  c.train.slots = 8  # users trained side by side in one compiled step
  c.train.remat = "auto"  # auto: recompute activations only when a step would not fit in memory
  c.train.memory_budget_gb = 0.0  # 0: 90 % of the memory available when a step compiles
  c.train.users_per_pass = 0  # users vmapped together inside a step; 0: 1 on CPU, all elsewhere
  # Which users share a compiled step: exact (one group per batch-shape bucket), refill (free
  # slots take smaller users padded up), auto (exact where users are looped, i.e. on a CPU, where
  # padding costs more than a compile; refill where they are vmapped and idle slots cost time).
  c.train.schedule = "auto"

  # Hypernetwork adapters (settings hyper_k0, oppu_warm_k0; oppu_jax/pipeline/hyper.py): a small
  # network maps a user's embedding (per item field, the mean of the embedded MiniLM's embeddings
  # of its history's values) to its adapter, trained once per run on the other users' histories,
  # through the task-adapted base, and applied to test users it never saw.
  c.hyper = ml_collections.ConfigDict()
  c.hyper.hidden = 64  # units between the embedding and the mixing weights
  c.hyper.rank = 16  # basis adapters mixed per user (the output heads' rank)
  c.hyper.epochs = 3  # passes over every training user's batches
  c.hyper.learning_rate = 1e-3
  c.hyper.users_per_step = 8  # users whose adapters one step generates and trains through
  c.hyper.max_users = 0  # training users (the non-test users with a history); 0 = all
  c.hyper.warm_epochs = 0  # oppu_warm_k0's epochs; 0 = config.train.epochs (cold OPPU's)
  # Cold start: in the OPPU-trained settings, a test user with at most `max_items` history items
  # is not trained but gets `adapter`: "base" (the method's fresh adapter: the task-adapted base
  # unchanged) or "hyper" (the hypernetwork's adapter from its few items, or the average user's
  # without any). The default only spares users without history, which OPPU cannot train.
  c.cold_start = ml_collections.ConfigDict()
  c.cold_start.max_items = 0
  c.cold_start.adapter = "base"  # base | hyper

  # Continual updates (oppu_jax/pipeline/update.py): with a date, each OPPU adapter is trained on
  # the history before it (version 1), then continued on the items from that date on (version 2,
  # adapters/<setting>/<user>/v2, what the predictions use), keeping its optimizer state.
  c.continual = ml_collections.ConfigDict()
  c.continual.since = ""  # "" = no update; an ISO date such as 2018-06-01
  # Or, without a date, each user's last N history items are the new ones (generated users live
  # in different years, so no one date splits them all).
  c.continual.last_items = 0
  c.continual.epochs = 0  # version 2's epochs over the new items; 0 = config.train.epochs
  # Version 2's warm-up share. The schedule's first step has lr 0 under warm-up, so a user with
  # one new batch and one epoch would not move at all; version 1's Adam moments are warm anyway.
  c.continual.warmup_ratio = 0.0

  # Stage 3: evaluation.
  c.eval = ml_collections.ConfigDict()
  c.eval.classification = "score"  # score (label strings) | generate (free text + exact match)
  c.eval.decoding = "greedy"  # greedy | sample | beam (generation tasks)
  c.eval.max_new_tokens = 32
  c.eval.temperature = 0.1  # the reference's sampling settings
  c.eval.top_k = 10
  c.eval.top_p = 0.9
  c.eval.num_beams = 4
  c.eval.batch_size = 16
  c.eval.adapter_scale = 1.0  # personal adapters' strength in predictions (1 trained; 0 the base)

  # Retrieval for the PEFT-vs-RAG study's RAG rows (settings "study"): its dense retriever and
  # the retrievers RSPG chooses among.
  c.retrieval = ml_collections.ConfigDict()
  c.retrieval.dense_model = ""  # "" = all-MiniLM-L6-v2 (embedded); or a BERT dir (Contriever)
  c.retrieval.rspg_candidates = ("bm25", "recency", "dense")

  c.profile = ml_collections.ConfigDict()
  # The chat model that writes PAG profiles (the OPPU paper: Vicuna-7B), loaded only while it
  # writes them; "" = the run's base model, which then needs a chat template.
  c.profile.model_path = ""
  # auto: the profile model's chat template, else Vicuna v1.1's format for a profile model given
  # by path | chat: its chat template only | vicuna: Vicuna v1.1's format (FastChat's).
  c.profile.template = "auto"
  c.profile.num_items = 10
  c.profile.max_new_tokens = 96

  # The papers' analyses (oppu_jax/analysis/): after the run, build analysis/<name>.md and .png
  # from the workdir's stages, training or evaluating only what is not there yet.
  c.analysis = ml_collections.ConfigDict()
  c.analysis.name = ""  # "" | a name of analysis.ANALYSES | comma-separated names | "all"
  c.analysis.shift_keep = 0.5  # behaviour shift: the share of each history kept (least similar)
  c.analysis.buckets = 3  # activity levels: equal-count buckets of test users by history length
  c.analysis.ks = (0, 1, 2, 4, 8)  # the retrieval k sweep
  c.analysis.efficiency_items = (4, 8, 16, 24, 32, 48)  # history sizes timed (one user's prefix)
  c.analysis.efficiency_ranks = (2, 4, 8, 16, 32)  # LoRA ranks timed
  # profile_gain's per-user gain: signed (the metric's difference, every user) | sign (the
  # PEFT-vs-RAG study's +1 / -1, users with no change left out)
  c.analysis.gain = "signed"

  # Several processes (hosts) in one run: jax.distributed.initialize first (pipeline/cluster.py).
  # On Cloud TPU and SLURM `enabled` alone suffices; elsewhere give the other three (or
  # $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID), which also enable it.
  c.distributed = ml_collections.ConfigDict()
  c.distributed.enabled = False
  c.distributed.coordinator = ""  # host:port of process 0
  c.distributed.num_processes = 0
  c.distributed.process_id = -1
  # A process that stops answering (killed, preempted) ends the others after this long.
  c.distributed.heartbeat_timeout_seconds = 100
  # A gs:// workdir (any etils epath URL) runs in a local mirror here; gs:// data and model paths
  # are fetched here once (oppu_jax/storage.py).
  c.storage = ml_collections.ConfigDict()
  c.storage.cache = "/tmp/oppu_jax_cache"
  c.mesh = ml_collections.ConfigDict()
  c.mesh.users = 1  # devices along the users axis (-1 = all; of several processes, 1 means -1)
  c.mesh.model = 1  # devices along the model axis (within one process)
  return c

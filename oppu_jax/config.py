"""The one base config: `get_config()` holds every default, `TASK_DIFFERENCES` what each LaMP
task changes, and `for_task(name)` (what configs/lampN.py return) applies them. Every field can be
overridden on the command line: `--config.train.epochs=3`.

Defaults are for the embedded SmolLM2-135M-Instruct on a 2-core CPU: lr 1e-3 in both stages (the
reference's 1e-4 barely moves a 135M model). For a 7B Llama-2, use the paper's values:
`--config.train.learning_rate=1e-4 --config.train.batch_size=4 --config.data.num_test_users=100`.
"""

import ml_collections

from oppu_jax.errors import ConfigError, DataError

# Per task, the keys whose values differ from the defaults below. The paper trains 3 epochs on
# the classification tasks, 2 (the default) on the rating and generation tasks.
TASK_DIFFERENCES = {
    "LaMP_1": {"train.epochs": 3},
    "LaMP_2N": {"train.epochs": 3},
    "LaMP_2M": {"train.epochs": 3},
    "LaMP_3": {},
    "LaMP_4": {},
    "LaMP_5": {},
    "LaMP_6": {},
    "LaMP_7": {},
}

# Keys with a fixed set of values, checked before a run starts.
CHOICES = {
    "data.format": ("auto", "official", "oppu"),
    "data.history_mode": ("oppu", "aligned", "text", "convert"),
    "model.backend": ("auto", "cpu", "xla"),
    "train.schedule": ("auto", "refill", "exact"),
    "train.remat": ("auto", "always", "never"),
    "eval.classification": ("score", "generate"),
    "eval.decoding": ("greedy", "sample", "beam"),
}


def for_task(name: str) -> ml_collections.ConfigDict:
  """The base config with `name`'s differences applied."""
  if name not in TASK_DIFFERENCES:
    raise ConfigError(f"config.task: unknown {name!r}; expected one of "
                      f"{', '.join(TASK_DIFFERENCES)}")
  c = get_config()
  c.task = name
  for key, value in TASK_DIFFERENCES[name].items():
    *parents, leaf = key.split(".")
    node = c
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def check(c: ml_collections.ConfigDict) -> None:
  """Raises ConfigError, naming the key, for a value no run can use."""
  from oppu_jax.data import tasks  # here: configs/*.py import this module, keep that light

  try:
    tasks.get_task(c.task)
  except DataError as e:
    raise ConfigError(f"config.task: {e}") from None
  for key, allowed in CHOICES.items():
    section, leaf = key.split(".")
    if c[section][leaf] not in allowed:
      raise ConfigError(f"config.{key}: unknown {c[section][leaf]!r}; expected one of "
                        f"{', '.join(allowed)}")


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "LaMP_3"
  c.seed = 0
  # Table 1 settings to run, comma-separated, or "all" (see oppu_jax/pipeline/settings.py).
  c.settings = "non_personalized,oppu_k0"
  c.overwrite = False  # replace a workdir that holds a run with another config
  c.progress = True  # progress bars

  c.data = ml_collections.ConfigDict()
  c.data.path = ""  # an official LaMP or OPPU-processed directory; "" = generate into workdir
  c.data.format = "auto"  # auto | official | oppu
  c.data.num_test_users = 8  # the N most active users get their own adapter (paper: 100)
  c.data.max_task_users = 0  # cap on users for task adaptation (0 = all the others)
  c.data.max_words = 768  # per history field, as the reference cuts
  c.data.history_mode = "oppu"  # oppu | aligned | text | convert (tasks.history_to_pairs)
  # The generator, when data.path is empty.
  c.data.synth = ml_collections.ConfigDict()
  c.data.synth.num_users = 40
  c.data.synth.history_min = 12
  c.data.synth.history_max = 32
  c.data.synth.queries_per_user = 6
  c.data.synth.text_words = 14
  c.data.synth.shift = 0.0
  c.data.synth.noise = 0.1

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
  c.task_adapt.learning_rate = 1e-3
  c.task_adapt.batch_size = 16
  c.task_adapt.epochs = 2
  c.task_adapt.k = 1  # retrieved items in the R and P variants' training prompts

  # Stage 2: one PEFT per user.
  c.peft = ml_collections.ConfigDict()
  c.peft.method = "lora"  # lora | ia3 | prompt_tuning
  c.peft.targets = ("q", "v")
  c.peft.rank = 8
  c.peft.alpha = 8.0
  c.peft.dropout = 0.05
  c.peft.num_virtual_tokens = 20

  c.train = ml_collections.ConfigDict()
  c.train.learning_rate = 1e-3
  c.train.weight_decay = 1e-2
  c.train.clip_norm = 0.3
  c.train.warmup_ratio = 0.1
  c.train.batch_size = 4
  c.train.epochs = 2
  c.train.slots = 8  # users trained side by side in one compiled step
  c.train.remat = "auto"  # auto: recompute activations only when a step would not fit in memory
  c.train.memory_budget_gb = 0.0  # 0: 90 % of the memory available when a step compiles
  c.train.users_per_pass = 0  # users vmapped together inside a step; 0: 1 on CPU, all elsewhere
  # Which users share a compiled step: exact (one group per batch-shape bucket), refill (free
  # slots take smaller users padded up), auto (exact where users are looped, i.e. on a CPU, where
  # padding costs more than a compile; refill where they are vmapped and idle slots cost time).
  c.train.schedule = "auto"

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

  c.profile = ml_collections.ConfigDict()
  c.profile.num_items = 10
  c.profile.max_new_tokens = 96

  c.distributed = False  # multi-host: call jax.distributed.initialize() first (launch/)
  c.mesh = ml_collections.ConfigDict()
  c.mesh.users = 1  # devices along the users axis (-1 = all)
  c.mesh.model = 1  # devices along the model axis
  return c

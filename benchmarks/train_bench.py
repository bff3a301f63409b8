"""Per-user LoRA training, three ways side by side on the same data, with SmolLM2-135M.

  (a) our multi-user trainer, U users in U slots of one compiled step: as it runs by default (on a
      CPU the users are looped inside the step), and with the U users vmapped (as on accelerators);
  (b) our trainer one user at a time (slots=1);
  (c) the reference pattern: PyTorch + HF PEFT, a fresh `get_peft_model` per user on the base
      transformers model, a Trainer-style loop (AdamW, clip, linear warm-up/decay, loss on the
      answer tokens only), `save_pretrained` per user; once in f32, once under bf16 autocast.

Every method trains LoRA r=8, alpha 8, dropout 0.05 on q,v with AdamW lr 1e-4, weight decay 1e-2,
grad-norm clip 0.3, 10 % linear warm-up, batch 4, and writes each adapter to disk. The data is
synthetic text (a headline-generation prompt over random English words) tokenized with our
Tokenizer: each example is a prompt cut to 108-124 tokens plus a 2-6-token answer and EOS,
right-padded to --seq_len. All methods read the identical batches (`batch_for_step`).

Timing and counting (what the table means):
- tokens/s counts REAL tokens (attention mask), not padding; the padding share is printed.
- s/adapter is wall time per user, saving included, compilation excluded (the first step's excess
  over the median step is reported as "compile" instead: XLA pays it once per shape, not per user).
- Model FLOPs are the minimum LoRA training needs, per real token: 4 x body params (forward, and
  the backward to activations; the frozen base needs no weight gradients), 6 x LoRA params,
  12 x layers x seq_len x attention width (dense scores and values, forward + backward); and per
  answer token 4 x hidden x vocab for the logits. The reference also computes logits at every
  position (+113 MFLOP/token here): that is work the loss does not need, so it is not counted.
  The usual 6N convention would report ~1.47x these MFU numbers.
- MFU divides by the 2048^3 GEMM rate measured in the same run for the same dtype path: JAX f32,
  JAX bf16-in/f32-out (our bf16 path), torch f32, torch bf16 (what autocast runs).
- Peak memory: one fresh subprocess per U loads the model, resets the RSS high-water mark (so the
  GGUF loader's transient is not counted), trains one step of U users and reads VmHWM. Growth over
  the loaded model is compared with U x (adapter + AdamW state) + activations, where activations
  are XLA's planned temporary buffers for that step (`memory_analysis()`); a copy of the base per
  user would show as ~0.5 GiB more per user.

  .venv/bin/python benchmarks/train_bench.py            # ~12 min on the 2-core dev box, quiet
  .venv/bin/python benchmarks/train_bench.py --quick    # ~3 min, a smoke run
  .venv/bin/python benchmarks/train_bench.py --model=t5 # T5 6+6 x 512, the study's LoRA
  .venv/bin/python benchmarks/train_bench.py --memory_only --memory_batch_size 4
  taskset -c 1 .venv/bin/python benchmarks/train_bench.py --threads 1   # a busy box: per thread
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gc
import glob
import gzip
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

# Results go to stdout as a table; keep library chatter out of it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader draws a progress bar
warnings.filterwarnings("ignore")

import jax
import jax.numpy as jnp

from oppu_jax.data.batching import encode_pair
from oppu_jax.models.load import embedded_gguf_path, load_model
from oppu_jax.models.tokenizer import Tokenizer
from oppu_jax.peft import hf_format
from oppu_jax.peft.lora import Lora
from oppu_jax.train import multi_user, user_batches

RANK, ALPHA, DROPOUT, TARGETS = 8, 8.0, 0.05, ("q", "v")
LR, WEIGHT_DECAY, CLIP, WARMUP = 1e-4, 1e-2, 0.3, 0.1
SEED = 0
GIB = 1024**3


def main():
  if "--model=t5" in sys.argv or " ".join(sys.argv).count("--model t5"):
    args = argparse.Namespace(model="t5")  # its own flags: t5_train_bench.parse_args
  else:
    args = parse_args()
  if args.model == "t5":  # the encoder-decoder's own benchmark (the study's LoRA on a T5)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import t5_train_bench

    t5_train_bench.main(sys.argv[1:])
    return
  if args.threads:
    # Before the XLA backend starts (first device query); memory runs inherit the environment.
    flags = [f"--xla_cpu_multi_thread_eigen={'false' if args.threads == 1 else 'true'}",
             f"intra_op_parallelism_threads={args.threads}"]
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", "")] + flags).strip()
  if args.memory_child:
    memory_child(args)
    return
  load = args.load_at_start = os.getloadavg()[0]
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs, "
        f"threads {args.threads or 'all'}; load average at start {load:.1f}", flush=True)
  if load > 0.5:
    print("WARNING: the CPU is shared right now. Every number will be low and noisy, and the "
          "PyTorch rows worst of all: its OpenMP threads spin at barriers when oversubscribed "
          "(seen here: a 4.5 s step took 32 s). On a busy box compare per thread instead: "
          "taskset -c 1 ... --threads 1", flush=True)
  memory = []
  if not args.memory_only:
    plans = make_plans(args)
    describe_data(plans, args)
    peaks = measure_gemm_peaks(not args.skip_reference, args.threads)
    rows = run_ours(plans, args, peaks)
    if not args.skip_reference:
      rows += run_reference(plans, args, peaks, flops=rows[0].flops)  # same data, same FLOPs
    print_table(rows, plans, args)
    if args.profile:
      profile_steps(plans, args)
  if args.memory_users:
    memory = [run_memory_child(u, args) for u in args.memory_users]
    print_memory(memory, args)
  print(f"load average at end {os.getloadavg()[0]:.1f} (2 cores: anything above ~0.3 means "
        "other processes shared the CPU and the numbers are low and noisy)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"args": vars(args), "rows": [] if args.memory_only else rows,
                 "memory": memory}, f, indent=1, default=str)


def parse_args():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", choices=("smollm2", "t5"), default="smollm2",
                 help="t5: benchmarks/t5_train_bench.py (a 6+6-layer T5, the study's LoRA)")
  p.add_argument("--users", type=int, default=8, help="U: users, and slots of method (a)")
  p.add_argument("--examples_per_user", type=int, default=8)
  p.add_argument("--batch_size", type=int, default=4)
  p.add_argument("--epochs", type=int, default=1)
  p.add_argument("--seq_len", type=int, default=128)
  p.add_argument("--bf16_params", choices=("float32", "bfloat16"), default="bfloat16",
                 help="param_dtype of our bf16 rows (compute is bf16-in/f32-accumulate)")
  p.add_argument("--quick", action="store_true", help="2 users x 4 examples, memory U=1,8")
  p.add_argument("--memory_only", action="store_true")
  p.add_argument("--skip_reference", action="store_true", help="no PyTorch rows")
  p.add_argument("--memory_users", type=str, default="1,8,32",
                 help="U values for the peak-memory runs ('' to skip)")
  p.add_argument("--memory_batch_size", type=int, default=1,
                 help="rows per user in the memory runs (activations scale with U x this)")
  p.add_argument("--memory_limit_gb", type=float, default=12.0,
                 help="the trainer's memory budget in the memory runs (train.memory_budget_gb):"
                      " above it, the trainer recomputes activations (remat)")
  p.add_argument("--memory_vmapped", action="store_true",
                 help="memory runs with the U users vmapped (train.users_per_pass=U), as on "
                      "accelerators; default: the trainer's choice (looped on a CPU)")
  p.add_argument("--profile", action="store_true",
                 help="also trace one user's steps per dtype and print where the time goes")
  p.add_argument("--threads", type=int, default=0,
                 help="threads for XLA and torch (0 = all cores); 1 with taskset for a busy box")
  p.add_argument("--json", type=str, default="", help="also write the results here")
  p.add_argument("--memory_child", type=int, default=0, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.quick:
    args.users, args.examples_per_user, args.epochs = 2, 4, 2
    if args.memory_users == "1,8,32":
      args.memory_users = "1,8"
  args.memory_users = [int(u) for u in args.memory_users.split(",") if u.strip()]
  return args


# ----------------------------------------------------------------------------------------------
# Data: the same per-user examples for every method.

_WORDS = (
    "the a city council voted on new plan for school budget after long debate over taxes and "
    "roads while local business owners said prices rose again this year as weather hurt crops "
    "in river valley where farmers wait rain police report fire near old market team won final "
    "game coach praised young players fans cheered market stocks fell bank raised rates "
    "scientists found water on distant planet doctors warn about flu season").split()


def make_plans(args) -> list[user_batches.UserPlan]:
  """U users x N examples: 'Generate a headline ...: <article>' -> a short headline + EOS."""
  tok = Tokenizer.from_gguf()
  instruction = "Generate a headline for the following article: "
  keep_head = len(tok.encode(instruction))  # the cut-off trims the article, not the instruction
  plans = []
  for user in range(args.users):
    rng = np.random.default_rng([SEED, user])
    examples = []
    for _ in range(args.examples_per_user):
      article = " ".join(rng.choice(_WORDS, size=2 * args.seq_len))
      headline = " " + " ".join(w.capitalize() for w in rng.choice(_WORDS, size=rng.integers(2, 5)))
      # Total length varies over the last ~10 % of seq_len, so batches carry some padding.
      cutoff = int(rng.integers(int(args.seq_len * 0.9), args.seq_len + 1))
      examples.append(encode_pair(instruction + article, headline, tok.encode, eos_id=tok.eos_id,
                                  cutoff=cutoff, keep_head=keep_head))
    plans.append(user_batches.plan_user(
        f"user{user}", examples, batch_size=args.batch_size, epochs=args.epochs,
        seq_buckets=(args.seq_len,), target_buckets=(8, 16)))
  return plans


def data_counts(plans) -> dict:
  """Real tokens, answer (target) tokens and padded slots over the whole run, all users."""
  real = sum(p.epochs * sum(len(e) for e in p.examples) for p in plans)
  targets = sum(p.epochs * sum(int(e.loss_mask[1:].sum()) for e in p.examples) for p in plans)
  padded = sum(p.total_steps * p.batch_size * p.seq_len for p in plans)
  return {"real": real, "targets": targets, "padded": padded}


def describe_data(plans, args):
  c = data_counts(plans)
  print(f"data: {len(plans)} users x {args.examples_per_user} examples x {args.epochs} epoch(s), "
        f"batch {args.batch_size} x {args.seq_len} tokens (synthetic text, our tokenizer); "
        f"{c['real']} real tokens, {c['targets']} answer tokens, padding "
        f"{1 - c['real'] / c['padded']:.1%} of the {c['padded']} processed slots", flush=True)


# ----------------------------------------------------------------------------------------------
# GEMM peaks: the denominator of MFU, measured now because the machine is shared.


def measure_gemm_peaks(include_torch: bool, threads: int, n: int = 2048,
                       reps: int = 5) -> dict[str, float]:
  """FLOP/s of an n^3 matmul, best of `reps`, per dtype path."""
  flops = 2 * n**3
  peaks = {}
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  for name, dtype in (("jax f32", jnp.float32), ("jax bf16", jnp.bfloat16)):
    # bf16 inputs with f32 accumulation: the path our compute_dtype=bfloat16 uses.
    f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    x, y = a.astype(dtype), b.astype(dtype)
    peaks[name] = flops / _best_time(lambda: f(x, y).block_until_ready(), reps)
  if include_torch:
    import torch

    torch.set_num_threads(threads or os.cpu_count())
    for name, dtype in (("torch f32", torch.float32), ("torch bf16", torch.bfloat16)):
      x, y = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
      peaks[name] = flops / _best_time(lambda: x @ y, reps)
  print("GEMM 2048^3 peak: " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()),
        flush=True)
  return peaks


def _best_time(fn, reps):
  fn()  # warm-up (and compilation)
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return min(times)


def model_flops(config, plans) -> float:
  """Minimum model FLOPs of the whole run (see the module docstring)."""
  c = data_counts(plans)
  return (c["real"] * flops_per_token(config, plans[0].seq_len)
          + c["targets"] * flops_per_target(config))


def flops_per_target(config) -> float:
  """The logits of one answer token, forward and backward to the hidden state."""
  return 4 * config.hidden_size * config.vocab_size


def flops_per_token(config, seq_len: int) -> float:
  """LoRA training FLOPs of one real token at sequence length seq_len (module docstring)."""
  L, d = config.num_layers, config.hidden_size
  attn_width = config.num_heads * config.dim_per_head
  shapes = {  # [d_in, d_out] per projection
      "q": (d, attn_width), "k": (d, config.num_kv_heads * config.dim_per_head),
      "v": (d, config.num_kv_heads * config.dim_per_head), "o": (attn_width, d),
      "gate": (d, config.intermediate_size), "up": (d, config.intermediate_size),
      "down": (config.intermediate_size, d),
  }
  body = L * sum(i * o for i, o in shapes.values())
  lora = L * sum(shapes[t][0] * RANK + RANK * shapes[t][1] for t in TARGETS)
  return 4 * body + 6 * lora + 12 * L * seq_len * attn_width


# ----------------------------------------------------------------------------------------------
# (a) and (b): our trainer.


@dataclasses.dataclass
class Row:
  method: str
  users_per_step: int
  dtype: str
  seconds: float  # training wall time, compilation excluded
  compile_seconds: float
  users: int
  tokens: int
  flops: float
  peak: float  # GEMM FLOP/s of this dtype path
  first_loss: float  # mean over users of their first / last step loss
  last_loss: float

  @property
  def tokens_per_s(self):
    return self.tokens / self.seconds

  @property
  def s_per_adapter(self):
    return self.seconds / self.users

  @property
  def mfu(self):
    return self.flops / self.seconds / self.peak


def run_ours(plans, args, peaks) -> list[Row]:
  rows = []
  for dtype in ("f32", "bf16"):
    if dtype == "f32":
      model, config = load_model(param_dtype="float32", compute_dtype="float32")
    else:
      model, config = load_model(param_dtype=args.bf16_params, compute_dtype="bfloat16")
    short = {"float32": "f32", "bfloat16": "bf16"}
    label = "f32" if dtype == "f32" else f"bf16 (params {short[args.bf16_params]})"
    # (a) as the trainer runs by default (on a CPU: the U users looped inside the one step), and
    # with the U users vmapped, as on accelerators.
    for method, slots, per_pass in (("(a) ours, U slots", len(plans), 0),
                                    ("(a) ours, U vmapped", len(plans), len(plans)),
                                    ("(b) ours, 1 slot", 1, 0)):
      rows.append(time_ours(model, config, plans, slots, method, label,
                            peaks["jax f32" if dtype == "f32" else "jax bf16"], per_pass))
    del model
    gc.collect()
  return rows


def time_ours(model, config, plans, slots, method, dtype_label, peak, users_per_pass) -> Row:
  peft = Lora(targets=TARGETS, rank=RANK, alpha=ALPHA, dropout=DROPOUT)
  train_config = multi_user.TrainConfig(learning_rate=LR, weight_decay=WEIGHT_DECAY,
                                        clip_norm=CLIP, warmup_ratio=WARMUP, slots=slots,
                                        seed=SEED, users_per_pass=users_per_pass)
  step_times = []
  last = [0.0]

  def progress(report):
    # The step returns host losses, so it has finished when this runs: per-step wall time.
    now = time.perf_counter()
    step_times.append(now - last[0])
    last[0] = now

  with tempfile.TemporaryDirectory() as out:
    save = lambda r: hf_format.save_adapter(os.path.join(out, r.user_id), peft, r.adapter,
                                            model.weight_table())
    stats = {}
    last[0] = start = time.perf_counter()
    results = multi_user.train_users(model, peft, plans, train_config, on_user_done=save,
                                     progress=progress, stats=stats)
    wall = time.perf_counter() - start
  # The first step also traces and compiles; its excess over a typical step is compilation.
  # With a single step there is nothing to compare it with: it stays in (shown as "-").
  compile_s = float("nan")
  if len(step_times) > 1:
    compile_s = max(step_times[0] - float(np.median(step_times[1:])), 0.0)
  assert stats["step_compilations"] == 1, stats
  row = Row(method, slots, dtype_label, wall - np.nan_to_num(compile_s), compile_s, len(plans),
            data_counts(plans)["real"], model_flops(config, plans), peak,
            float(np.mean([r.losses[0] for r in results.values()])),
            float(np.mean([r.losses[-1] for r in results.values()])))
  _progress_line(row)
  return row


def _progress_line(row: Row):
  print(f"  {row.method:<22} {row.dtype:<18} {row.tokens_per_s:7.1f} tokens/s "
        f"{row.s_per_adapter:6.2f} s/adapter"
        + ("" if math.isnan(row.compile_seconds) else f" (compile {row.compile_seconds:.1f} s)"),
        flush=True)


# ----------------------------------------------------------------------------------------------
# (c): the reference pattern, PyTorch + HF PEFT, one user after another.


def run_reference(plans, args, peaks, flops) -> list[Row]:
  import torch
  import transformers
  from transformers import AutoModelForCausalLM

  transformers.utils.logging.disable_progress_bar()
  torch.set_num_threads(args.threads or os.cpu_count())
  path = embedded_gguf_path()
  hf = AutoModelForCausalLM.from_pretrained(os.path.dirname(path),
                                            gguf_file=os.path.basename(path),
                                            dtype=torch.float32)
  hf.config.use_cache = False
  rows = []
  for dtype in ("f32", "bf16"):
    rows.append(time_reference(hf, plans, dtype, flops,
                               peaks["torch f32" if dtype == "f32" else "torch bf16"]))
  return rows


def time_reference(hf, plans, dtype, flops, peak) -> Row:
  import contextlib

  import peft as hf_peft
  import torch
  from transformers import get_linear_schedule_with_warmup

  lora_config = hf_peft.LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT,
                                   target_modules=[f"{t}_proj" for t in TARGETS],
                                   task_type="CAUSAL_LM")
  autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bf16" else (
      contextlib.nullcontext)
  first, last = [], []
  with tempfile.TemporaryDirectory() as out:
    start = time.perf_counter()
    for plan in plans:
      torch.manual_seed(user_batches.user_seed(SEED, plan.user_id))
      model = hf_peft.get_peft_model(hf, lora_config)  # a fresh adapter, as the reference does
      model.train()
      params = [p for p in model.parameters() if p.requires_grad]
      optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
      schedule = get_linear_schedule_with_warmup(
          optimizer, math.ceil(WARMUP * plan.total_steps), plan.total_steps)
      losses = []
      for step in range(plan.total_steps):
        batch = user_batches.batch_for_step(plan, step, SEED)  # the rows our trainer reads
        tokens = torch.from_numpy(batch["tokens"]).long()
        loss_mask = torch.from_numpy(_loss_mask(batch))
        labels = torch.where(loss_mask, tokens, torch.full_like(tokens, -100))
        attention_mask = torch.from_numpy(batch["attention_mask"]).long()
        with autocast():
          loss = model(input_ids=tokens, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
      model.save_pretrained(os.path.join(out, plan.user_id))
      hf = model.unload()  # the bare base again, for the next user's fresh wrap
      first.append(losses[0])
      last.append(losses[-1])
    wall = time.perf_counter() - start
  row = Row("(c) torch + HF PEFT", 1, "f32" if dtype == "f32" else "bf16 autocast", wall,
            float("nan"), len(plans), data_counts(plans)["real"], flops, peak,
            float(np.mean(first)), float(np.mean(last)))
  _progress_line(row)
  return row


def _loss_mask(batch) -> np.ndarray:
  """The answer tokens our trainer scores (target_index + 1), as a [B, T] mask for HF labels."""
  mask = np.zeros(batch["tokens"].shape, bool)
  rows, k = np.nonzero(batch["target_weight"] > 0)
  mask[rows, batch["target_index"][rows, k] + 1] = True
  return mask


# ----------------------------------------------------------------------------------------------
# The tables.


def print_table(rows: list[Row], plans, args):
  ref = {r.dtype: r for r in rows if r.method.startswith("(c)")}
  ref_f32, ref_bf16 = ref.get("f32"), ref.get("bf16 autocast")
  print()
  print(f"LoRA r={RANK} on {','.join(TARGETS)}, {len(plans)} users, seq {args.seq_len}, batch "
        f"{args.batch_size}; tokens/s = real tokens; MFU = minimum model FLOPs / GEMM peak of "
        "the row's dtype")
  header = (f"{'method':<22} {'users/step':>10} {'dtype':<18} {'tokens/s':>9} {'s/adapter':>9} "
            f"{'x c-f32':>8} {'x c-bf16':>8} {'MFU':>6} {'compile s':>9} {'loss first>last':>16}")
  print(header)
  print("-" * len(header))
  for r in rows:
    vs = lambda c: f"{c.s_per_adapter / r.s_per_adapter:8.2f}" if c else f"{'-':>8}"
    print(f"{r.method:<22} {r.users_per_step:>10} {r.dtype:<18} {r.tokens_per_s:9.1f} "
          f"{r.s_per_adapter:9.2f} {vs(ref_f32)} {vs(ref_bf16)} {r.mfu:6.1%} "
          f"{_or_dash(r.compile_seconds):>9} {r.first_loss:7.3f} > {r.last_loss:6.3f}")
  print("x c-*: s/adapter of that reference row / s/adapter of this row (higher is faster).")
  print("targets for (a): >= 2x c-f32, >= 1x c-bf16, MFU >= 50 %"
        + (" -- NOT VALID NOW: the CPU was shared (see the WARNING above)"
           if getattr(args, "load_at_start", 0) > 0.5 and args.threads != 1 else ""))
  for r in rows:
    if not r.method.startswith("(a)"):
      continue
    checks = [f"MFU {r.mfu:.0%} {'ok' if r.mfu >= 0.5 else 'MISSED'}"]
    if ref_f32:
      x = ref_f32.s_per_adapter / r.s_per_adapter
      checks.append(f"{x:.2f}x c-f32 {'ok' if x >= 2 else 'MISSED'}")
    if ref_bf16:
      x = ref_bf16.s_per_adapter / r.s_per_adapter
      checks.append(f"{x:.2f}x c-bf16 {'ok' if x >= 1 else 'MISSED'}")
    print(f"  {r.method} {r.dtype}: " + ", ".join(checks))
  print(flush=True)


def _or_dash(x: float) -> str:
  return "-" if math.isnan(x) else f"{x:.1f}"


# ----------------------------------------------------------------------------------------------
# --profile: where a step's time goes, from XLA:CPU's per-thunk trace events.

# Thunk name -> what it is, by XLA:CPU's naming (first match wins).
_THUNK_KINDS = (
    ("ynn_fusion", "GEMMs (YNNPACK dot fusions)"),
    ("dot", "GEMMs (other dots)"),
    ("convert", "dtype converts"),
    ("broadcast", "buffer fills (scan output stacks)"),
    ("dynamic-update-slice", "scan stacking (dynamic-update-slice)"),
    ("transpose", "transposes/copies"),
    ("copy", "transposes/copies"),
)


def profile_steps(plans, args):
  """Traces our trainer on the first user alone (slots=1), for f32 and for bf16."""
  for dtype, params in (("float32", "float32"), ("bfloat16", args.bf16_params)):
    model, _ = load_model(param_dtype=params, compute_dtype=dtype)
    peft = Lora(targets=TARGETS, rank=RANK, alpha=ALPHA, dropout=DROPOUT)
    config = multi_user.TrainConfig(learning_rate=LR, weight_decay=WEIGHT_DECAY, clip_norm=CLIP,
                                    warmup_ratio=WARMUP, slots=1, seed=SEED)
    with tempfile.TemporaryDirectory() as trace_dir:
      # Compilation emits no thunk events, so tracing the whole call times execution only.
      with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        multi_user.train_users(model, peft, plans[:1], config)
      path = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
      with gzip.open(path[0]) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    by_kind, by_name = collections.Counter(), collections.Counter()
    for e in events:
      if e.get("ph") == "X" and "hlo_module" in e.get("args", {}):
        kind = next((k for key, k in _THUNK_KINDS if key in e["name"]), "other fusions")
        by_kind[kind] += e["dur"] / 1e6
        by_name[e["name"]] += e["dur"] / 1e6
    total = sum(by_kind.values())
    steps = plans[0].total_steps
    print(f"profile, compute {dtype} (params {params}): {total / steps:.2f} s of thunk time per "
          f"step over {steps} steps (thunks may overlap on 2 threads)")
    for kind, sec in by_kind.most_common():
      print(f"  {sec / total:6.1%} {kind}")
    print("  top thunks: " + ", ".join(f"{n} {s / steps:.3f}s" for n, s in by_name.most_common(6)))
    del model
    gc.collect()
  print(flush=True)


# ----------------------------------------------------------------------------------------------
# Peak memory: one fresh process per U.


def run_memory_child(users: int, args) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--memory_child", str(users),
         "--threads", str(args.threads),
         "--seq_len", str(args.seq_len), "--memory_batch_size", str(args.memory_batch_size),
         "--memory_limit_gb", str(args.memory_limit_gb)] + (
             ["--memory_vmapped"] if args.memory_vmapped else [])
  print(f"memory run U={users} ...", flush=True)
  done = subprocess.run(cmd, capture_output=True, text=True)
  for line in done.stdout.splitlines():
    if line.startswith("MEMORY_JSON "):
      return json.loads(line.removeprefix("MEMORY_JSON "))
  return {"users": users, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}


def memory_child(args):
  """Loads the model, resets the RSS high-water mark, trains one step of U users, reports."""
  users, rows = args.memory_child, args.memory_batch_size
  runtime_rss = _proc_status("VmRSS")  # python + jax + our imports, before any weights
  # Each run compiles the step for XLA's plan, then in train_users (and once more for the remat
  # plan if the trainer chose remat): the persistent cache makes the repeats lookups.
  jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="train_bench_xla"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  rng = np.random.default_rng(SEED)
  from oppu_jax.data.batching import Example

  def example():
    tokens = rng.integers(3, 40000, args.seq_len).astype(np.int32)
    mask = np.zeros(args.seq_len, bool)
    mask[-4:] = True  # a 4-token answer
    return Example(tokens, mask)

  plans = [user_batches.plan_user(f"user{u}", [example() for _ in range(rows)], batch_size=rows,
                                  epochs=1, seq_buckets=(args.seq_len,), target_buckets=(8,))
           for u in range(users)]
  peft = Lora(targets=TARGETS, rank=RANK, alpha=ALPHA, dropout=DROPOUT)
  # The trainer itself decides on remat: it compiles the step and recomputes activations only if
  # XLA's plan exceeds the budget.
  config = multi_user.TrainConfig(learning_rate=LR, weight_decay=WEIGHT_DECAY, clip_norm=CLIP,
                                  warmup_ratio=WARMUP, slots=users, seed=SEED,
                                  memory_budget_gb=args.memory_limit_gb,
                                  users_per_pass=users if args.memory_vmapped else 0)
  model, model_config = load_model(param_dtype="float32", compute_dtype="float32")
  no_remat_plan = _xla_memory_plan(model, peft, config, plans[0], users, remat=False)
  gc.collect()
  loaded_rss = _proc_status("VmRSS")
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current RSS: the loader's transient peak is not training's
  start = time.perf_counter()
  stats = {}
  multi_user.train_users(model, peft, plans, config, stats=stats)
  seconds = time.perf_counter() - start
  peak_rss = _proc_status("VmHWM")  # before any further compilation below
  remat = any(stats["remat"].values())
  # The remat plan is compiled only when the trainer chose remat (it is what then ran).
  plan = _xla_memory_plan(model, peft, config, plans[0], users, remat=True) if remat else (
      no_remat_plan)
  one = peft.init(model.weight_table(), jax.random.PRNGKey(0))
  adapter_bytes = sum(x.nbytes for x in jax.tree.leaves(one))
  base_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx_state(model)))
  out = {
      "users": users, "rows_per_user": rows, "remat": remat,
      "runtime_rss": runtime_rss, "loaded_rss": loaded_rss, "peak_rss": peak_rss,
      "maxrss_incl_load": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "base_bytes": base_bytes, "adapter_bytes": adapter_bytes,
      # AdamW keeps two f32 moments per adapter parameter (plus a scalar count).
      "optimizer_bytes": 2 * adapter_bytes,
      "xla_temp": plan["temp"] if plan else None,
      "xla_temp_without_remat": no_remat_plan["temp"] if remat and no_remat_plan else None,
      "seconds": seconds,
  }
  print("MEMORY_JSON " + json.dumps(out))


def nnx_state(model):
  from flax import nnx

  return nnx.state(model)


def _xla_memory_plan(model, peft, config, plan, users, remat) -> dict | None:
  """XLA's buffer plan for the U-user step, from compiling it without running it.

  Uses the trainer's internal step object (benchmark introspection, not API): if that changes,
  the memory table shows no plan rather than failing.
  """
  try:
    steps = multi_user._StepProgram(model, peft, config, None, plan.total_steps)
    slots = steps.fresh_slots(users)
    batch = user_batches.batch_for_step(plan, 0, SEED)
    batches = {k: np.stack([v] * users) for k, v in batch.items()}
    compiled = steps._jits[remat].lower(steps.base, slots, batches).compile()
    analysis = compiled.memory_analysis()
    return {"temp": analysis.temp_size_in_bytes, "arguments": analysis.argument_size_in_bytes}
  except Exception as e:  # noqa: BLE001 -- introspection only
    print(f"no XLA memory plan: {type(e).__name__}: {e}", file=sys.stderr)
    return None


def _proc_status(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  return 0


def print_memory(results: list[dict], args):
  print()
  mode = "vmapped" if args.memory_vmapped else "the trainer's default (looped on a CPU)"
  print(f"Peak memory, f32, one training step of U users x {args.memory_batch_size} row(s) x "
        f"{args.seq_len} tokens (GiB), one fresh process per U; users {mode}.")
  print("expected growth = U x (adapter + AdamW) + activations (XLA's planned temporaries); "
        "growth = peak RSS in the step - RSS with the model loaded")
  header = (f"{'U':>3} {'remat':>5} {'base':>5} {'U x (ad+opt)':>12} {'act (XLA)':>9} "
            f"{'expected':>8} {'growth':>7} {'ratio':>5} {'loaded RSS':>10} {'peak RSS':>8} "
            f"{'step s':>6}")
  print(header)
  print("-" * len(header))
  for m in results:
    if "error" in m:
      print(f"{m['users']:>3} failed: {m['error']}")
      continue
    per_user = m["users"] * (m["adapter_bytes"] + m["optimizer_bytes"])
    expected = per_user + (m["xla_temp"] or 0)
    growth = m["peak_rss"] - m["loaded_rss"]
    print(f"{m['users']:>3} {str(m['remat']):>5} {m['base_bytes'] / GIB:5.2f} "
          f"{per_user / GIB:12.3f} {(m['xla_temp'] or 0) / GIB:9.2f} {expected / GIB:8.2f} "
          f"{growth / GIB:7.2f} {growth / expected:5.2f} {m['loaded_rss'] / GIB:10.2f} "
          f"{m['peak_rss'] / GIB:8.2f} {m['seconds']:6.1f}")
    if m.get("xla_temp_without_remat"):
      print(f"    (without remat XLA planned {m['xla_temp_without_remat'] / GIB:.1f} GiB of "
            f"temporaries, above --memory_limit_gb {args.memory_limit_gb}: the trainer chose "
            "remat)")
  ok = [m for m in results if "error" not in m]
  if len(ok) >= 2 and ok[0]["remat"] == ok[-1]["remat"]:
    a, b = ok[0], ok[-1]
    slope = (b["peak_rss"] - a["peak_rss"]) / (b["users"] - a["users"])
    print(f"Peak RSS grows {slope / GIB:.3f} GiB per extra user (a base copy would add "
          f"{a['base_bytes'] / GIB:.2f}); loaded RSS = runtime {a['runtime_rss'] / GIB:.2f} + "
          "base + what the GGUF loader leaves resident.", flush=True)


if __name__ == "__main__":
  main()

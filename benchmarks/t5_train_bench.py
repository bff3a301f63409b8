"""Per-user LoRA training on a T5 encoder-decoder: ours vs PyTorch + HF PEFT, the same data.

Run as `benchmarks/train_bench.py --model=t5` (or this file directly). The model is a random
"tiny but not toy" T5 v1.1 (6 encoder + 6 decoder layers, d_model 512, 8 heads x 64, gated-gelu
d_ff 1024, vocab 32128: ~60 M parameters, ~1/180 of FlanT5-XXL per layer), saved by transformers
and loaded by both sides from the same files. Every method trains the study's LoRA (r 8, alpha
32, dropout 0.1 on q, k, v of every attention: encoder, decoder and cross) with AdamW lr 5e-4,
weight decay 1e-4, grad-norm clip 0.3, 5 % linear warm-up, batch 4, and saves each adapter:

  (a) our multi-user trainer, U users in U slots of one compiled step (the CPU policy loops
      the users inside the step), with bf16 frozen weights and bf16 matmul inputs, and in f32;
  (b) our trainer one user at a time (slots = 1), bf16;
  (c) the reference pattern: a fresh `get_peft_model` per user on transformers'
      T5ForConditionalGeneration, a Trainer-style loop, `save_pretrained`; f32 and bf16 autocast.

Each user has --examples seq2seq pairs: a source of --source_len tokens and a target of
--target_len tokens (random ids). tokens/s counts real encoder + decoder tokens; s/adapter is
wall time per user with saving, compilation excluded (reported apart, as in train_bench.py).

  .venv/bin/python benchmarks/train_bench.py --model=t5     # ~6 min on the 2-core dev box
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time

import numpy as np

SEED = 0
RANK, ALPHA, DROPOUT = 8, 32.0, 0.1
LR, WEIGHT_DECAY, CLIP, WARMUP = 5e-4, 1e-4, 0.3, 0.05


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="t5", help=argparse.SUPPRESS)
  p.add_argument("--users", type=int, default=4)
  p.add_argument("--examples", type=int, default=16)
  p.add_argument("--epochs", type=int, default=1)
  p.add_argument("--batch_size", type=int, default=4)
  p.add_argument("--source_len", type=int, default=128)
  p.add_argument("--target_len", type=int, default=16)
  p.add_argument("--skip_reference", action="store_true")
  return p.parse_known_args(argv)[0]


def make_checkpoint(path: str):
  import torch
  import transformers

  config = transformers.T5Config(
      vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=6, num_decoder_layers=6,
      num_heads=8, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  torch.manual_seed(SEED)
  transformers.T5ForConditionalGeneration(config).save_pretrained(path)


def make_plans(args):
  from oppu_jax.data.batching import encode_with_source
  from oppu_jax.train import user_batches

  rng = np.random.default_rng(SEED)
  plans = []
  for u in range(args.users):
    examples = []
    for _ in range(args.examples):
      source = rng.integers(3, 32000, args.source_len - 1).tolist()
      target = rng.integers(3, 32000, args.target_len - 2).tolist()
      examples.append(encode_with_source("s", "t", lambda text, s=source, t=target:
                                     s if text == "s" else t, eos_id=1, decoder_start_id=0))
    plans.append(user_batches.plan_user(
        f"user{u}", examples, batch_size=args.batch_size, epochs=args.epochs,
        seq_buckets=(args.target_len, args.source_len), target_buckets=(args.target_len,)))
  return plans


def real_tokens(plans) -> int:
  return sum(p.epochs * sum(len(e.tokens) + len(e.source) for e in p.examples) for p in plans)


def time_ours(path, plans, slots, dtype):
  from oppu_jax.models import load
  from oppu_jax.peft import hf_format
  from oppu_jax.peft.lora import Lora
  from oppu_jax.train import multi_user

  model, _ = load.load_model(path, param_dtype=dtype, compute_dtype=dtype)
  lora = Lora(targets=model.weight_table().check_projections(("q", "k", "v")), rank=RANK,
              alpha=ALPHA, dropout=DROPOUT)
  config = multi_user.TrainConfig(learning_rate=LR, weight_decay=WEIGHT_DECAY, clip_norm=CLIP,
                                  warmup_ratio=WARMUP, slots=slots, seed=SEED)
  steps = []
  last = [0.0]

  def progress(report):
    now = time.perf_counter()
    steps.append(now - last[0])
    last[0] = now

  with tempfile.TemporaryDirectory() as out:
    save = lambda r: hf_format.save_adapter(os.path.join(out, r.user_id), lora, r.adapter,
                                            model.weight_table(), model_config=model.config)
    last[0] = start = time.perf_counter()
    results = multi_user.train_users(model, lora, plans, config, on_user_done=save,
                                     progress=progress)
    wall = time.perf_counter() - start
  compile_s = max(steps[0] - float(np.median(steps[1:])), 0.0) if len(steps) > 1 else 0.0
  losses = [(r.losses[0], r.losses[-1]) for r in results.values()]
  return wall - compile_s, compile_s, losses


def time_reference(path, plans, dtype):
  import peft as hf_peft
  import torch
  import transformers
  from oppu_jax.train import user_batches

  transformers.utils.logging.disable_progress_bar()
  hf = transformers.T5ForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
  config = hf_peft.LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT,
                              target_modules=["q", "k", "v"], task_type="SEQ_2_SEQ_LM")
  autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bf16" else (
      contextlib.nullcontext)
  losses = []
  with tempfile.TemporaryDirectory() as out:
    start = time.perf_counter()
    for plan in plans:
      torch.manual_seed(user_batches.user_seed(SEED, plan.user_id))
      model = hf_peft.get_peft_model(hf, config)
      model.train()
      params = [p for p in model.parameters() if p.requires_grad]
      optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
      schedule = transformers.get_linear_schedule_with_warmup(
          optimizer, math.ceil(WARMUP * plan.total_steps), plan.total_steps)
      first = None
      for step in range(plan.total_steps):
        batch = user_batches.batch_for_step(plan, step, SEED)  # the rows our trainer reads
        decoder = torch.from_numpy(batch["tokens"]).long()
        labels = torch.full_like(decoder, -100)
        weight = batch["target_weight"] > 0
        rows, k = np.nonzero(weight)
        labels[rows, batch["target_index"][rows, k]] = torch.from_numpy(
            batch["target_ids"][rows, k]).long()
        with autocast():
          loss = model(input_ids=torch.from_numpy(batch["source_tokens"]).long(),
                       attention_mask=torch.from_numpy(batch["source_mask"]).long(),
                       decoder_input_ids=decoder,
                       decoder_attention_mask=torch.from_numpy(batch["attention_mask"]).long(),
                       labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        first = loss.item() if first is None else first
      losses.append((first, loss.item()))
      model.save_pretrained(os.path.join(out, plan.user_id))
      hf = model.unload()
    wall = time.perf_counter() - start
  return wall, 0.0, losses


def main(argv=None):
  args = parse_args(argv)
  import jax

  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs; load "
        f"average at start {os.getloadavg()[0]:.1f}", flush=True)
  plans = make_plans(args)
  tokens = real_tokens(plans)
  print(f"T5 6+6 layers x 512 (random), {args.users} users x {args.examples} pairs "
        f"(source {args.source_len}, target {args.target_len} tokens), batch {args.batch_size}, "
        f"{args.epochs} epoch(s): {sum(p.total_steps for p in plans)} user-steps, {tokens} "
        "real tokens", flush=True)
  rows = []
  with tempfile.TemporaryDirectory() as path:
    make_checkpoint(path)
    runs = [("(a) ours, multi-user", args.users, "bfloat16"),
            ("(a) ours, multi-user", args.users, "float32"),
            ("(b) ours, one at a time", 1, "bfloat16")]
    for name, slots, dtype in runs:
      wall, compile_s, losses = time_ours(path, plans, slots, dtype)
      rows.append((name, slots, "bf16" if dtype == "bfloat16" else "f32", wall, compile_s, losses))
      print(f"  {name:<26} {rows[-1][2]:<14} {wall / len(plans):6.2f} s/adapter", flush=True)
    if not args.skip_reference:
      for dtype in ("f32", "bf16"):
        wall, compile_s, losses = time_reference(path, plans, dtype)
        label = "f32" if dtype == "f32" else "bf16 autocast"
        rows.append(("(c) torch + HF PEFT", 1, label, wall, compile_s, losses))
        print(f"  {'(c) torch + HF PEFT':<26} {label:<14} {wall / len(plans):6.2f} s/adapter",
              flush=True)
  ref = {r[2]: r[3] for r in rows if r[0].startswith("(c)")}
  print()
  print("| method | slots | dtype | s/adapter | tokens/s | compile s | loss first -> last | "
        "vs torch f32 | vs torch bf16 |")
  print("|---|---:|---|---:|---:|---:|---|---:|---:|")
  for name, slots, dtype, wall, compile_s, losses in rows:
    first, last = np.mean([l[0] for l in losses]), np.mean([l[1] for l in losses])
    vs = [f"{ref[k] / wall:.2f}x" if k in ref else "-" for k in ("f32", "bf16 autocast")]
    print(f"| {name} | {slots} | {dtype} | {wall / len(plans):.2f} | {tokens / wall:.0f} | "
          f"{compile_s:.1f} | {first:.2f} -> {last:.2f} | {vs[0]} | {vs[1]} |")
  print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()

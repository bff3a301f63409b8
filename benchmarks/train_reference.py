"""Method (c) of train_bench.py: the reference pattern, PyTorch + HF PEFT, one user after another
(a fresh `get_peft_model` per user, a Trainer-style loop, `save_pretrained`), on the batches our
trainer reads."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time

import numpy as np

from flops import data_counts
from oppu_jax.models.load import embedded_gguf_path
from oppu_jax.train import user_batches
from train_tables import Row, progress_line
from train_workload import ALPHA, CLIP, DROPOUT, LR, RANK, SEED, TARGETS, WARMUP, WEIGHT_DECAY

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
  progress_line(row)
  return row

def _loss_mask(batch) -> np.ndarray:
  """The answer tokens our trainer scores (target_index + 1), as a [B, T] mask for HF labels."""
  mask = np.zeros(batch["tokens"].shape, bool)
  rows, k = np.nonzero(batch["target_weight"] > 0)
  mask[rows, batch["target_index"][rows, k] + 1] = True
  return mask

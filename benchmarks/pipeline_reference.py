"""pipeline_bench.py's other side: the OPPU pipeline as the reference code runs it, in PyTorch +
HF PEFT, one user after another.

- Stage 1: one LoRA (config.task_adapt's targets, rank, alpha, dropout) trained on the other users'
  queries, then merged into the base (`merge_and_unload`).
- Stage 2: per test user, a fresh LoRA (config.peft) on the merged base (`get_peft_model`), a
  Trainer-style loop, `save_pretrained`, `unload`.
- Stage 3: every test query scored as the reference scores a choice: each label appended to the
  prompt in a batch of its own (right-padded), its tokens' log-probabilities summed, the best
  label predicted; the personal setting under the user's adapter loaded from disk.

It reads what our pipeline reads: the same plans and batches (`training.task_adaptation_plan`,
`training.user_plans`, `batch_for_step`), the
same recipe (epochs, batch, lr, warm-up, clipping, weight decay), the same query and label ids.
Only the framework and the schedule of the work differ. Weights: bf16 autocast over f32 weights,
the reference's fastest mode on this CPU (benchmarks/README.md: train_bench's (c) rows).
"""

from __future__ import annotations

import math
import os
import tempfile
import time

import numpy as np

from oppu_jax.models.load import embedded_gguf_path
from oppu_jax.pipeline.training import task_adaptation_plan, user_plans
from oppu_jax.train import user_batches
from train_reference import _loss_mask


def run_reference(exp, threads: int, work) -> dict:
  """{"stages": [stage summaries], "predictions": {setting name: {query id: label}}}.

  work: pipeline_bench's `Work` (the plans and the query rows our run trained and scored)."""
  import torch
  import transformers
  from transformers import AutoModelForCausalLM

  transformers.utils.logging.disable_progress_bar()
  torch.set_num_threads(threads)
  path = embedded_gguf_path() if not exp.config.model.path else exp.config.model.path
  start = time.perf_counter()
  hf = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                            dtype=torch.float32)
  hf.config.use_cache = False
  stages = [{"stage": "load", "seconds": time.perf_counter() - start}]

  c = exp.config
  task_lora = _lora_config(c.task_adapt)
  torch.manual_seed(c.seed)  # the task LoRA's initialisation and dropout
  start = time.perf_counter()
  model = _wrap(hf, task_lora)
  tokens = _train(model, work.task_plan, c.task_adapt.learning_rate, c, torch)
  hf = model.merge_and_unload()
  stages.append(_summary("stage 1: task adaptation", start, work.task_plan.total_steps, tokens))

  user_lora = _lora_config(c.peft)
  start, tokens, steps = time.perf_counter(), 0, 0
  with tempfile.TemporaryDirectory() as adapters:
    for plan in work.user_plans:
      torch.manual_seed(user_batches.user_seed(c.seed, plan.user_id))
      model = _wrap(hf, user_lora)
      tokens += _train(model, plan, c.train.learning_rate, c, torch)
      steps += plan.total_steps
      model.save_pretrained(os.path.join(adapters, plan.user_id))
      hf = model.unload()
    stages.append(_summary("stage 2: per-user adapters", start, steps, tokens))

    predictions = {}
    for setting, rows in work.query_rows.items():
      start = time.perf_counter()
      predictions[setting.name] = _score(hf, rows, work, adapters if setting.personal else None,
                                         exp, torch)
      stages.append(_summary(f"stage 3: {setting.name}", start, len(rows), 0, unit="queries"))
  return {"stages": stages, "predictions": predictions}


def _lora_config(c):
  import peft as hf_peft
  return hf_peft.LoraConfig(r=c.rank, lora_alpha=c.alpha, lora_dropout=c.dropout,
                            target_modules=[f"{t}_proj" for t in c.targets],
                            task_type="CAUSAL_LM")


def _wrap(hf, lora_config):
  import peft as hf_peft
  model = hf_peft.get_peft_model(hf, lora_config)  # a fresh adapter, as the reference does
  model.train()
  return model


def _train(model, plan, learning_rate, c, torch) -> int:
  """The plan's steps, as the reference trains; returns the real (unpadded) tokens."""
  from transformers import get_linear_schedule_with_warmup

  params = [p for p in model.parameters() if p.requires_grad]
  optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=c.train.weight_decay)
  schedule = get_linear_schedule_with_warmup(
      optimizer, math.ceil(c.train.warmup_ratio * plan.total_steps), plan.total_steps)
  tokens = 0
  for step in range(plan.total_steps):
    batch = user_batches.batch_for_step(plan, step, c.seed)  # the rows our trainer reads
    ids = torch.from_numpy(batch["tokens"]).long()
    labels = torch.where(torch.from_numpy(_loss_mask(batch)), ids, torch.full_like(ids, -100))
    attention_mask = torch.from_numpy(batch["attention_mask"]).long()
    tokens += int(attention_mask.sum())
    with torch.autocast("cpu", dtype=torch.bfloat16):
      loss = model(input_ids=ids, attention_mask=attention_mask, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, c.train.clip_norm)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
  return tokens


def _score(hf, rows, work, adapters, exp, torch) -> dict[str, str]:
  """{query id: the label with the highest summed log-probability}."""
  import peft as hf_peft

  labels = exp.task.labels
  out, current = {}, None
  model = hf
  for user_id, qid, prompt in rows:
    if adapters is not None and user_id != current:
      if current is not None:
        model = model.unload()
      model = hf_peft.PeftModel.from_pretrained(model, os.path.join(adapters, user_id))
      current = user_id
    model.eval()
    seqs = [prompt + choice for choice in work.choices]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
      logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    scores = [sum(float(logp[i, len(prompt) + j - 1, t]) for j, t in enumerate(choice))
              for i, choice in enumerate(work.choices)]
    out[qid] = labels[int(np.argmax(scores))]
  if adapters is not None and current is not None:
    model.unload()
  return out


def _summary(stage, start, done, tokens, unit="steps") -> dict:
  seconds = time.perf_counter() - start
  out = {"stage": stage, "seconds": seconds, unit: done}
  if tokens:
    out.update(real_tokens=tokens, real_tokens_per_s=tokens / seconds)
  return out


def reference_plans(exp):
  """(task plan, user plans) our pipeline trains for the default run (base B, the personal
  setting's adapters)."""
  personal = next(s for s in exp.settings if s.personal)
  return task_adaptation_plan(exp, "B"), user_plans(exp, personal, exp.test_users)

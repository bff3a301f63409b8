"""Evaluation benchmark on the embedded SmolLM2: our batched multi-user evaluation against the
reference's way, same users and queries, side by side in one run.

  .venv/bin/python benchmarks/eval_bench.py            # full: 8 users x 4 queries per task
  .venv/bin/python benchmarks/eval_bench.py --quick    # a smoke run, a few minutes

Each of U users owns a random (non-zero) LoRA adapter, r=8 on q and v, written to disk in the HF
PEFT format. Both sides load every user's adapter from disk inside the timed region.
- Ours: adapters stacked; mixed-user batches, each row under its own user's adapter
  (classification: `eval/score.py` scores the 5 label strings " 1".." 5" + EOS in one packed pass
  per query; generation: `eval/decode.py`, greedy).
- The reference (OPPU / LaMP code): PyTorch + HF PEFT; per user `PeftModel.from_pretrained` on the
  transformers model, then `generate` one query at a time with its sampling settings (do_sample,
  top_k=10, temperature=0.1, top_p=0.9, max_new_tokens=200); classification is generated too,
  then parsed. How long it runs depends on when the model emits EOS (untuned SmolLM2 with our
  random adapters answered " 1.\nThe answer is: 1" and stopped after 11 tokens in the quick
  run, far below 200): the "new tok" column shows what it generated. It is timed with its
  limit on --reference_full_queries (0 = all), and capped at --reference_cap new tokens (NOT the
  reference's setting: a lower bound on its cost, barely enough for " 3") on all queries.
Prompts: the OPPU task prompts (LaMP_3 review rating, LaMP_5 title generation) on the project's
synthetic data, text length set near LaMP's average inputs (--text_words); no chat template.
"ours (first)" includes XLA compilation (a handful of programs per run); "ours" is the same call
again, the steady state of a run over many queries. Ratio = our queries/s / that row's.

Seen with --quick (4 queries per task) while other sessions loaded the 2 cores (load average
4-6; torch's 2 OpenMP threads degrade far more than XLA under such load, so these ratios are
inflated; rerun on a quiet machine):

  LaMP_3  ours: score 5 labels                     4      6.6     0.610     5.0      1.0x
  LaMP_3  reference: sample <= 200 tok             1     12.0     0.083    11.0      7.3x
  LaMP_3  reference*: sample <= 4 tok              4     35.2     0.114     4.0      5.4x
  LaMP_5  ours: greedy                             4     17.5     0.228    32.0      1.0x
  LaMP_5  reference: sample <= 32 tok              4    119.4     0.033    32.0      6.8x
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from oppu_jax.data import prompts as prompts_lib, synth  # noqa: E402
from oppu_jax.eval.decode import generate_for_rows  # noqa: E402
from oppu_jax.eval.score import Programs, score_choices  # noqa: E402
from oppu_jax.models import llama, load  # noqa: E402
from oppu_jax.models.decoding import Decoding  # noqa: E402
from oppu_jax.models.tokenizer import Tokenizer  # noqa: E402
from oppu_jax.peft import hf_format  # noqa: E402
from oppu_jax.peft.lora import Lora  # noqa: E402
from oppu_jax.peft.stack import UserAdapters  # noqa: E402

REFERENCE_SAMPLING = dict(do_sample=True, top_k=10, temperature=0.1, top_p=0.9)


def main(argv=None):
  args = _parse(argv)
  import torch  # the reference's stack; imported here so --help needs no torch
  import transformers

  # Other processes on the 2 cores skew the ratio (torch's threads suffer more): show the load.
  print(f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), dtype {args.dtype}, load average "
        f"{os.getloadavg()[0]:.1f}", flush=True)
  model, config = load.load_model(
      compute_dtype=args.dtype, param_dtype=args.dtype)  # ours
  tok = Tokenizer.from_gguf()
  path = load.embedded_gguf_path()
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path),
      dtype=getattr(torch, args.dtype)).eval()

  workdir = tempfile.mkdtemp(prefix="eval_bench_")
  lora = Lora(targets=("q", "v"), rank=8, alpha=8.0)
  table = llama.weight_table(config)
  user_dirs = _write_adapters(workdir, lora, config, table, args.users)
  buckets = tuple(range(args.bucket_step, 2049, args.bucket_step))
  results = []

  # --- classification (LaMP_3) ---
  queries = _queries("LaMP_3", args, tok)
  labels = [tok.encode(prompts_lib.ANSWER_SEP + label) + [tok.eos_id] for label in "12345"]
  print(f"LaMP_3: {len(queries)} queries, prompt tokens mean "
        f"{np.mean([len(p) for _, p in queries]):.0f}", flush=True)

  programs = Programs()  # shared, so the second run is the warm one

  def ours_cls():
    adapters = UserAdapters.load(user_dirs, table)
    return score_choices(model, adapters, queries, labels, batch_size=args.batch_size,
                         buckets=buckets, programs=programs)

  for name in ("ours (first)", "ours"):
    secs, scores = _timed(ours_cls)
    results.append(("LaMP_3", f"{name}: score 5 labels", len(queries), secs, 5.0))
  print(f"  ours: predicted labels {np.argmax(scores, axis=1) + 1}", flush=True)
  full = queries[:args.reference_full_queries or None]
  for setting, cap, subset in (("reference", args.reference_max_new_tokens, full),
                               ("reference*", args.reference_cap, queries)):
    secs, new_tokens, texts = _reference(hf, torch, user_dirs, subset, cap, tok)
    results.append(("LaMP_3", f"{setting}: sample <= {cap} tok", len(subset), secs,
                    np.mean(new_tokens)))
    print(f"  reference <= {cap}: e.g. {texts[0][:60]!r}", flush=True)

  # --- generation (LaMP_5) ---
  queries = _queries("LaMP_5", args, tok)
  print(f"LaMP_5: {len(queries)} queries, prompt tokens mean "
        f"{np.mean([len(p) for _, p in queries]):.0f}", flush=True)

  def ours_gen():
    adapters = UserAdapters.load(user_dirs, table)
    decoding = Decoding(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                        prompt_buckets=buckets)
    return generate_for_rows(model, adapters, queries, decoding, eos_id=tok.eos_id,
                             pad_id=tok.pad_id)

  for name in ("ours (first)", "ours"):
    secs, out = _timed(ours_gen)
    results.append(("LaMP_5", f"{name}: greedy", len(queries), secs,
                    np.mean([len(o) for o in out])))
  print(f"  ours: e.g. {tok.decode(out[0])[:60]!r}", flush=True)
  secs, new_tokens, texts = _reference(hf, torch, user_dirs, queries, args.max_new_tokens, tok)
  results.append(("LaMP_5", f"reference: sample <= {args.max_new_tokens} tok", len(queries),
                  secs, np.mean(new_tokens)))
  print(f"  reference: e.g. {texts[0][:60]!r}", flush=True)
  _print_table(results)
  print(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min)")


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--users", type=int, default=8)
  p.add_argument("--queries_per_user", type=int, default=4)
  p.add_argument("--max_new_tokens", type=int, default=32,
                 help="generation task, both sides")
  p.add_argument("--reference_max_new_tokens", type=int, default=200,
                 help="the reference's classification limit (its setting: 200)")
  p.add_argument("--reference_full_queries", type=int, default=0,
                 help="queries the reference classifies with --reference_max_new_tokens "
                      "(0 = all)")
  p.add_argument("--reference_cap", type=int, default=4,
                 help="a capped reference on all classification queries (not its setting)")
  p.add_argument("--batch_size", type=int, default=16, help="our rows per batch")
  p.add_argument("--bucket_step", type=int, default=32, help="our padded lengths: multiples")
  p.add_argument("--text_words", default="100,160",
                 help="min,max words of review / abstract (LaMP averages ~150)")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="weights and matmul inputs, both sides")
  p.add_argument("--quick", action="store_true",
                 help="2 users x 2 queries, 1 query at the reference's full limit")
  args = p.parse_args(argv)
  if args.quick:
    args.users, args.queries_per_user, args.reference_full_queries = 2, 2, 1
  args.text_words = tuple(int(x) for x in args.text_words.split(","))
  return args


def _queries(task: str, args, tok) -> list[tuple[int, list[int]]]:
  """(user index, prompt ids), users interleaved as an evaluation set would mix them."""
  data = synth.synthesize(task, num_users=args.users, seed=0,
                          queries_per_user=args.queries_per_user, text_words=args.text_words)
  per_user = [[tok.encode(prompts_lib.build_prompt(task, q.input)) for q in u.queries]
              for u in data.users]
  return [(u, per_user[u][k]) for k in range(args.queries_per_user) for u in range(args.users)]


def _write_adapters(workdir, lora, config, table, users: int) -> list[str]:
  dirs = []
  for u in range(users):
    adapter = lora.init(table, jax.random.key(u))
    rng = np.random.default_rng(u)
    # B = 0 would make every user the base model: give it random, small, non-zero values.
    adapter = jax.tree.map(np.asarray, adapter)
    for target in lora.targets:
      b = adapter["layers"][target]["b"]
      adapter["layers"][target]["b"] = (0.02 * rng.standard_normal(b.shape)).astype(np.float32)
    d = os.path.join(workdir, f"user_{u}")
    hf_format.save_adapter(d, lora, adapter, table, model_config=config)
    dirs.append(d)
  return dirs


def _reference(hf, torch, user_dirs, queries, max_new_tokens, tok):
  """The reference's loop: per user, load the adapter, generate each of its queries alone.
  -> (seconds, new tokens per query, decoded texts)."""
  from peft import PeftModel

  by_user: dict[int, list[list[int]]] = {}
  for u, prompt in queries:
    by_user.setdefault(u, []).append(prompt)
  new_tokens, texts = [], []
  start = time.perf_counter()
  for u, prompts in by_user.items():
    peft_model = PeftModel.from_pretrained(hf, user_dirs[u]).eval()
    for prompt in prompts:
      ids = torch.tensor([prompt])
      with torch.no_grad():
        out = peft_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                  max_new_tokens=max_new_tokens, eos_token_id=tok.eos_id,
                                  pad_token_id=tok.pad_id, **REFERENCE_SAMPLING)
      gen = out[0, len(prompt):].tolist()
      new_tokens.append(len(gen))
      texts.append(tok.decode(gen, skip_special_tokens=True))
    peft_model.unload()  # back to the bare base for the next user
  return time.perf_counter() - start, new_tokens, texts


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  jax.block_until_ready(jnp.zeros(()))
  return time.perf_counter() - start, out


def _print_table(results):
  print()
  head = f"{'task':7} {'method':34} {'queries':>7} {'seconds':>8} {'queries/s':>9} " \
         f"{'new tok':>7} {'ours/this':>9}"
  print(head)
  print("-" * len(head))
  ours = {task: q / s for task, name, q, s, _ in results if name.startswith("ours:")}
  for task, name, q, s, new in results:
    qps = q / s
    print(f"{task:7} {name:34} {q:7d} {s:8.1f} {qps:9.3f} {new:7.1f} {ours[task] / qps:8.1f}x")
  print("\nnew tok: mean tokens generated per query (ours classification: labels scored). "
        "reference*: capped, not the reference's setting.")


if __name__ == "__main__":
  main()

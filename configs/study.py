"""The PEFT-vs-RAG study's grid (its Table 1) for one LaMP task: non-personalized; PEFT (one LoRA
per user, r = 8, 16, 32, 64, trained on CONVERT pairs); RAG with k = 4 by BM25, recency, a dense
retriever (all-MiniLM-L6-v2 here; Contriever from a local path) and RSPG; PEFT + RAG (each rank's
adapters with the best RAG row's retriever); the study's prompts (its Table 3).

On the embedded SmolLM2 and generated LaMP-format data (the "study_embedded" recipe,
oppu_jax/config.py: STUDY_EMBEDDED says what departs from the study and why):

  python -m oppu_jax.main --config=configs/study.py:LaMP_2M --workdir=runs/study_lamp2m
  python -m oppu_jax.main --config=configs/study.py:LaMP_5 --workdir=runs/study_lamp5

On FlanT5 from a local path, with the study's own values (the "study" recipe):

  python -m oppu_jax.main --config=configs/study.py:LaMP_2M,study \\
      --workdir=runs/flan_lamp2m --config.model.path=/models/flan-t5-xxl

The argument is `TASK[,RECIPE]`; results.md is laid out as the study's Table 1.

Measured (2026-11-24, 2-core CPU, generated data, 48 queries of 8 users; tables in README.md,
"FlanT5 and the PEFT-vs-RAG study"):
  LaMP_2M: non-personalized accuracy 0.0625; PEFT r=8 0.4167*; RAG dense 0.5625* (best; BM25
    0.5000*); PEFT+RAG r=8 0.4375*. 15 min 07 s wall, partly shared with other jobs.
  LaMP_5: non-personalized ROUGE-1 0.1015; PEFT r=8 0.6103*†; RAG BM25 0.1443 (best);
    PEFT+RAG r=8 0.2125*. 7 min 52 s wall, quiet.
"""

from oppu_jax import config


def get_config(arg: str = "LaMP_2M"):
  task, _, recipe = (arg or "LaMP_2M").partition(",")
  return config.for_task(task, recipe or "study_embedded")

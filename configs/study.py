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

Expected results: `python scripts/results.py study_lamp2m study_lamp5` writes them to
docs/results/study_lamp2m/ and docs/results/study_lamp5/ (with run.md: when, commit, machine,
versions, wall time).
"""

from oppu_jax import config


def get_config(arg: str = "LaMP_2M"):
  task, _, recipe = (arg or "LaMP_2M").partition(",")
  return config.for_task(task, recipe or "study_embedded")

"""The prompts built from a LaMP task's record: task, study and profile prompts, training pairs.

A prompt is a plain string; an answer is the gold string as the LaMP evaluator compares it
("3", "[1]", "sci-fi", a headline). The model sees `prompt + ANSWER_SEP + answer`: encode the
answer as `ANSWER_SEP + answer` (`model_pair`) so the space belongs to the answer, as the
reference's `"... score: {score}"` tokenizes; a pair with an empty prompt is plain text.

The templates themselves are the tasks' fields (`tasks.Task`); CONVERT follows the PEFT-vs-RAG
study (its Table 4, as LaMP's `prompts/prompts.py` builds it). Departure from the reference code,
on purpose: the profile prompt joins the items with " | " (the reference formats the Python list
repr).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import random
from typing import Any
import zlib

from oppu_jax.data.tasks import Task, get_task, make_input, parse_input, query_text
from oppu_jax.errors import DataError

Item = Mapping[str, Any]
ANSWER_SEP = " "
MODES = ("oppu", "aligned", "text", "convert", "input_only", "output_only")


def build_prompt(
    task: Task | str,
    query_input: str,
    retrieved_items: Sequence[Item] = (),
    profile: str | None = None,
) -> str:
  """OPPU's prompt for an official `input`: [profile] [retrieved history] task prompt."""
  task = _task(task)
  return _with_context(task, task.prompt.format(**parse_input(task, query_input)),
                       retrieved_items, profile)


# The PEFT-vs-RAG study's Table 3 (after Salemi et al. 2024b, LaMP's prompts): a per-entry prompt
# (PPEP) per retrieved item, the entries joined by ", and ", then the aggregated input prompt
# (AIP) around the task input. LaMP_2N is not in the study (it uses LaMP-2 movies); its entry
# follows LaMP's original news-categorization prompt. Departure: LaMP cuts each entry to a share
# of the token budget; here the whole prompt is cut from its start (retrieved entries first) so
# the task input at its end survives (pipeline/run.py).
_STUDY_PPEP = {
    "LaMP_1": '"{title}"',
    "LaMP_2N": 'the category for the article: "{text}" is "{category}"',
    "LaMP_2M": 'the tag for the movie: "{description}" is "{tag}"',
    "LaMP_3": '{score} is the score for "{text}"',
    "LaMP_4": '"{title}" is the title for "{text}"',
    "LaMP_5": '"{title}" is the title for "{abstract}"',
    "LaMP_6": '"{title}" is the title for "{text}"',
    "LaMP_7": '"{text}"',
}
_STUDY_AIP = {"LaMP_5": "{entries}. Following the given patterns {input}",
              "LaMP_7": "{entries} are written by a person. Following the given patterns {input}"}


def build_study_prompt(task: Task | str, query_input: str,
                       retrieved_items: Sequence[Item] = ()) -> str:
  """The study's prompt (its Table 3) for an official `input` with k retrieved items; with none,
  the input itself. LaMP_1 adds the entries right after the word "title" of the input
  (`add_to_paper_title`: "...the title, and "A", and "B" "T"..."), as LaMP's code does."""
  task = _task(task)
  if not retrieved_items:
    return query_input
  entries = ", and ".join(_STUDY_PPEP[task.name].format(**item) for item in retrieved_items)
  if task.name == "LaMP_1":
    at = query_input.find("title")
    if at == -1:
      return f"{entries} {query_input}"
    return f"{query_input[:at + 5]}, and {entries}{query_input[at + 5:]}"
  return _STUDY_AIP.get(task.name, "{entries}. {input}").format(entries=entries,
                                                                 input=query_input)


def history_to_pairs(
    task: Task | str,
    item: Item,
    mode: str = "oppu",
    *,
    retrieved_items: Sequence[Item] = (),
    profile: str | None = None,
    seed: int = 0,
) -> tuple[str, str]:
  """One history item as a training pair (prompt, answer).

  mode "aligned": the OPPU task prompt of the item's input -> its output (tasks with a task-shaped
    history; DataError for LaMP_1 / LaMP_7).
  mode "text": ("", format_item(item)) — next-token on the item text.
  mode "oppu": the paper's choice, "aligned" where possible, else "text".
  mode "convert": PEFT-vs-RAG Table 4 — the official input -> output for task-shaped items;
    LaMP_1 "Write an abstract for this title: T" -> abstract; LaMP_7 "Complete the following
    tweet: <first part>" -> <second part>, split at a word boundary drawn from (seed, item id).
  mode "input_only" / "output_only": OPPU's history-format ablation (its Table 3) — next-token on
    the item's input side alone (a review, an abstract) or its output side alone (a score, a
    title), as if the history had kept only that half; task-shaped histories only.
  retrieved_items / profile are prepended as in `build_prompt` (not in "text" mode, whose prompt
  is empty; nor in "convert", whose prompts are the study's, without context).
  """
  task = _task(task)
  if mode not in MODES:
    raise DataError(f"unknown history mode {mode!r}; expected one of {', '.join(MODES)}")
  if mode == "oppu":
    mode = "aligned" if task.aligned else "text"
  if mode == "text":
    return "", format_item(task, item)
  if mode == "convert":
    return _convert(task, item, seed)
  if not task.aligned:
    raise DataError(f"{task.name} history is not task-shaped; use mode 'text' or 'convert'")
  if mode in ("input_only", "output_only"):
    return "", str(item[task.input_field if mode == "input_only" else task.output_field])
  prompt = task.prompt.format(text=item[task.input_field])
  return _with_context(task, prompt, retrieved_items, profile), str(item[task.output_field])


def model_pair(prompt: str, answer: str) -> tuple[str, str]:
  """(prompt, answer) as the model reads them: the separating space joins the answer."""
  return (prompt, ANSWER_SEP + answer) if prompt else (prompt, answer)


def format_item(task: Task | str, item: Item) -> str:
  """A history item as one line of the OPPU prompt ("review: ... score: 4")."""
  task = _task(task)
  if task.optional_fields and all(f in item for f in task.optional_fields):
    return task.full_history_line.format(**item)
  return task.history_line.format(**item)


def corpus_text(task: Task | str, item: Item) -> str:
  """What BM25 matches a history item on (LaMP's query/corpus makers)."""
  task = _task(task)
  return " ".join(str(item[f]) for f in _CORPUS_FIELDS[task.name])


def item_query_text(task: Task | str, item: Item) -> str:
  """A history item's own query text (its input side, no answer) — for retrieval at training."""
  task = _task(task)
  return str(item[task.input_field or task.item_fields[0]])


def retrieval_query(task: Task | str, query_input: str) -> str:
  """What BM25 matches against the history for an official `input`: `query_text`."""
  return query_text(task, query_input)


def profile_prompt(task: Task | str, history_items: Sequence[Item], max_words: int = 200) -> str:
  """The Appendix J prompt that asks an instruct LLM for the user's profile. Each item's fields
  are cut to `max_words` words, as the reference does; choose the items (the reference samples
  10) before calling."""
  task = _task(task)
  lines = [format_item(task, _cut_item(item, max_words)) for item in history_items]
  return task.profile_instruction.format(" | ".join(lines))


def _task(task: Task | str) -> Task:
  return task if isinstance(task, Task) else get_task(task)


def _with_context(task, prompt, retrieved_items, profile) -> str:
  parts = []
  if profile:
    parts.append(profile)
  if retrieved_items:
    parts.append("\n".join(format_item(task, item) for item in retrieved_items))
  parts.append(prompt)
  return "\n".join(parts)


def _convert(task: Task, item: Item, seed: int = 0) -> tuple[str, str]:
  if task.name == "LaMP_1":
    return f"Write an abstract for this title: {item['title']}", str(item["abstract"])
  if task.name == "LaMP_7":
    words = str(item["text"]).split()
    if len(words) < 2:
      return "Complete the following tweet: ", " ".join(words)
    # Random as in the study, but reproducible: seeded by the run's seed and the item id, not
    # by global state (seed 0 keeps the item id's own draw).
    key = str(item["id"]) if seed == 0 else f"{seed}:{item['id']}"
    cut = random.Random(zlib.crc32(key.encode())).randint(1, len(words) - 1)
    return (f"Complete the following tweet: {' '.join(words[:cut])}", " ".join(words[cut:]))
  return make_input(task, text=item[task.input_field]), str(item[task.output_field])


def _cut_item(item: Item, max_words: int) -> dict[str, Any]:
  return {k: (" ".join(v.split()[:max_words]) if isinstance(v, str) and k not in ("id", "date")
              else v) for k, v in item.items()}


_CORPUS_FIELDS = {
    "LaMP_1": ("title", "abstract"),
    "LaMP_2N": ("title", "text"),
    "LaMP_2M": ("description",),
    "LaMP_3": ("text",),
    "LaMP_4": ("title", "text"),
    "LaMP_5": ("title", "abstract"),
    "LaMP_6": ("text",),
    "LaMP_7": ("text",),
}

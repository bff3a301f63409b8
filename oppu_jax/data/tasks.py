"""The LaMP tasks: item fields, labels, metric family, the official `input`, and the prompt texts.

The prompts built from these texts are in `prompts`. Sources: the OPPU task prompts (paper
Appendix I; wording and line breaks as in OPPU's `prompt/prompt.json`), the profile prompts
(Appendix J). Departures from the reference code, on purpose:
- LaMP_1's task prompt keeps both reference options (the reference formats them into a template
  with one slot, so they vanish). Its history item reads `paper title: {title} reference:
  {citation}` where the item has a `citation` (OPPU's processed release carries one), else
  `paper title: {title}` (the official release's items have only title and abstract).
- LaMP_6 is not in OPPU: its prompts follow LaMP_4's pattern with email/subject.
"""

from __future__ import annotations

import dataclasses
import re

from oppu_jax.errors import DataError

CATEGORIES = (
    "food & drink", "sports", "education", "parents", "religion", "travel", "business",
    "crime", "science & technology", "culture & arts", "entertainment", "politics", "women",
    "style & beauty", "healthy living",
)
TAGS = (
    "sci-fi", "based on a book", "comedy", "action", "twist ending", "dystopia", "dark comedy",
    "classic", "psychology", "fantasy", "romance", "thought-provoking", "social commentary",
    "violence", "true story",
)
# The label order in OPPU's prompts (Appendix I) differs from the evaluator's label order.
_PROMPT_CATEGORIES = (
    "travel, education, parents, style & beauty, entertainment, food & drink, science & "
    "technology, business, sports, healthy living, women, politics, crime, culture & arts, "
    "religion"
)
_PROMPT_TAGS = ", ".join(TAGS)


@dataclasses.dataclass(frozen=True)
class Task:
  """One LaMP task.

  item_fields: the keys every history ("profile") item carries besides `id` (and `date`).
  optional_fields / full_history_line: fields some releases add to items (strings, checked where
    present), and the history line used when an item has all of them.
  input_field / output_field: the item fields that form a task-shaped (input, answer) pair;
    None for LaMP_1 and LaMP_7, whose history is not in the task's shape.
  labels: the evaluator's label list (classification), else None.
  metric: "classification", "regression" (LaMP_3, also scored as labels) or "generation".
  """

  name: str
  description: str
  item_fields: tuple[str, ...]
  input_field: str | None
  output_field: str | None
  labels: tuple[str, ...] | None
  metric: str
  oppu_dir: str  # the task's folder in OPPU's processed release
  lamp_input: str  # the official `input`, slots {text} (LaMP_1: {title} {option1} {option2})
  input_marker: str  # regex; the query text starts after its first match
  prompt: str  # OPPU task prompt (Appendix I), same slots as lamp_input
  history_line: str  # a retrieved item in the OPPU prompt, slots are item fields
  profile_instruction: str  # Appendix J; "{}" takes the user history
  optional_fields: tuple[str, ...] = ()
  full_history_line: str = ""

  @property
  def aligned(self) -> bool:
    """Whether history items are (input, output) pairs in the task's own shape."""
    return self.input_field is not None


def get_task(name: str) -> Task:
  """The task called `name` ("LaMP_3"; "LaMP-3" and OPPU folder names are accepted too)."""
  key = _ALIASES.get(name, name.replace("-", "_"))
  if key not in TASKS:
    raise DataError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
  return TASKS[key]


def parse_input(task: Task | str, query_input: str) -> dict[str, str]:
  """The non-template parts of an official `input`: {"text"}, or for LaMP_1
  {"title", "option1", "option2"}. Raises DataError when the task's marker is absent."""
  task = _task(task)
  if task.name == "LaMP_1":
    m = _CITATION_RE.search(query_input)
    if not m:
      raise DataError(f"{task.name} input lacks 'the title \"...\"' and '[1]: \"...\" [2]: \"...\"'")
    return {k: v.strip() for k, v in m.groupdict().items()}
  # The first match: the template comes first, and the text itself may contain the marker.
  m = re.search(task.input_marker, query_input)
  if not m:
    raise DataError(f"{task.name} input lacks the marker {task.input_marker!r}")
  return {"text": query_input[m.end():].strip()}


def query_text(task: Task | str, query_input: str) -> str:
  """The query's own text: the article / review / abstract / tweet; LaMP_1: the paper title."""
  slots = parse_input(task, query_input)
  return slots.get("text", slots.get("title", ""))


def make_input(task: Task | str, **slots: str) -> str:
  """The official LaMP `input` for the slots (the inverse of `parse_input`)."""
  return _task(task).lamp_input.format(**slots)


def _task(task: Task | str) -> Task:
  return task if isinstance(task, Task) else get_task(task)


# Titles may contain quotes: the title runs to the last quote before "[1]:".
_CITATION_RE = re.compile(
    r'written the paper with the title "(?P<title>.*)".*?\[1\]: "(?P<option1>.*)"\s*'
    r'\[2\]: "(?P<option2>.*)"\s*$', re.S)

TASKS: dict[str, Task] = {t.name: t for t in (
    Task(
        name="LaMP_1", description="citation identification",
        item_fields=("title", "abstract"), input_field=None, output_field=None,
        labels=("[1]", "[2]"), metric="classification", oppu_dir="citation",
        lamp_input=(
            'For an author who has written the paper with the title "{title}", which reference '
            'is related? Just answer with [1] or [2] without any explanation. [1]: "{option1}" '
            '[2]: "{option2}"'),
        input_marker="",
        prompt=(
            "Identify the most relevant reference for the listed publication by the researcher. "
            "Select the reference paper that is most closely related to the researcher's work. "
            "Please respond with only the number that corresponds to the reference.\n"
            "paper title: {title}\nreference: [1] - {option1} [2] - {option2}\nanswer:"),
        history_line="paper title: {title}",
        optional_fields=("citation",),
        full_history_line="paper title: {title} reference: {citation}",
        profile_instruction=(
            "Write a summary, in English, of the research interests and topics of a researcher "
            "who has published the following papers. Only generate the summary, no other text. "
            "User History: {} Answer:"),
    ),
    Task(
        name="LaMP_2N", description="news categorization",
        item_fields=("text", "title", "category"), input_field="text", output_field="category",
        labels=CATEGORIES, metric="classification", oppu_dir="news_categorize",
        lamp_input=(
            "Which category does this article relate to among the following categories? Just "
            "answer with the category name without further explanation. categories: ["
            + ", ".join(CATEGORIES) + "] article: {text}"),
        input_marker=r"\]\s*article:",
        prompt=(
            "Which category does this article relate to among the following categories? Just "
            "answer with the category name without further explanation. categories: ["
            + _PROMPT_CATEGORIES + "]\narticle: {text} category:"),
        history_line="article: {text} category: {category}",
        profile_instruction=(
            "Look at the following past articles this journalist has written and determine the "
            "most popular category they write in. Answer in the following form: most popular "
            "category: <category>. User History: {} Answer:"),
    ),
    Task(
        name="LaMP_2M", description="movie tagging",
        item_fields=("description", "tag"), input_field="description", output_field="tag",
        labels=TAGS, metric="classification", oppu_dir="movie_tagging",
        lamp_input=(
            "Which tag does this movie relate to among the following tags? Just answer with the "
            "tag name without further explanation. tags: [" + _PROMPT_TAGS + "] description: "
            "{text}"),
        input_marker=r"\]\s*description:",
        prompt=(
            "Which tag does this movie relate to among the following tags? Just answer with the "
            "tag name without further explanation. tags: [" + _PROMPT_TAGS + "]\n"
            "description: {text} tag:"),
        history_line="description: {description} tag: {tag}",
        profile_instruction=(
            "Look at the following past movies this user has watched and determine the most "
            "popular tag they labeled. Answer in the following form: most popular tag: <tag>. "
            "User History: {} Answer:"),
    ),
    Task(
        name="LaMP_3", description="product rating",
        item_fields=("text", "score"), input_field="text", output_field="score",
        labels=("1", "2", "3", "4", "5"), metric="regression", oppu_dir="product_rating",
        lamp_input=(
            "What is the score of the following review on a scale of 1 to 5? just answer with "
            "1, 2, 3, 4, or 5 without further explanation. review: {text}"),
        input_marker=r"review:",
        prompt=(
            "What is the score of the following review on a scale of 1 to 5? just answer with "
            "1, 2, 3, 4, or 5 without further explanation.\nreview: {text} score:"),
        history_line="review: {text} score: {score}",
        profile_instruction=(
            "Based on this user's past reviews, what are the most common scores they give for "
            "positive and negative reviews? Answer in the following form: most common positive "
            "score: <most common positive score>, most common negative score: <most common "
            "negative score>. User History: {} Answer:"),
    ),
    Task(
        name="LaMP_4", description="news headline generation",
        item_fields=("text", "title"), input_field="text", output_field="title",
        labels=None, metric="generation", oppu_dir="news_headline",
        lamp_input="Generate a headline for the following article: {text}",
        input_marker=r"following article:",
        prompt="Generate a headline for the following article.\narticle: {text} headline:",
        history_line="article: {text} headline: {title}",
        profile_instruction=(
            "Given this author's previous articles, try to describe a template for their "
            "headlines. I want to be able to accurately predict the headline gives one of their "
            "articles. Be specific about their style and wording, don't tell me anything "
            "generic. User History: {} Answer:"),
    ),
    Task(
        name="LaMP_5", description="scholarly title generation",
        item_fields=("title", "abstract"), input_field="abstract", output_field="title",
        labels=None, metric="generation", oppu_dir="scholarly_title",
        lamp_input="Generate a title for the following abstract of a paper: {text}",
        input_marker=r"abstract of a paper:",
        prompt="Generate a title for the following abstract of a paper.\nabstract: {text} title:",
        history_line="abstract: {abstract} title: {title}",
        profile_instruction=(
            "Given this author's previous publications, try to describe a template for their "
            "titles. I want to be able to accurately predict the title of one of the papers from "
            "the abstract. Only generate the template description, nothing else. User History: "
            "{} Answer:"),
    ),
    Task(
        name="LaMP_6", description="email subject generation (private data; format only)",
        item_fields=("text", "title"), input_field="text", output_field="title",
        labels=None, metric="generation", oppu_dir="email_subject",
        lamp_input="Generate a subject for the following email: {text}",
        input_marker=r"following email:",
        prompt="Generate a subject for the following email.\nemail: {text} subject:",
        history_line="email: {text} subject: {title}",
        profile_instruction=(
            "Given this person's previous emails, try to describe a template for their email "
            "subjects. I want to be able to accurately predict the subject of one of their "
            "emails. Be specific about their style and wording, don't tell me anything generic. "
            "User History: {} Answer:"),
    ),
    Task(
        name="LaMP_7", description="tweet paraphrasing",
        item_fields=("text",), input_field=None, output_field=None,
        labels=None, metric="generation", oppu_dir="tweet_paraphrase",
        lamp_input="Paraphrase the following tweet without any explanation before or after it: {text}",
        input_marker=r"before or after it:",
        prompt=(
            "Following the given pattern, paraphrase the following text into tweet without any "
            "explanation before or after it.\ntext: {text} tweet:"),
        history_line="tweet: {text}",
        profile_instruction=(
            "Given this person's previous tweets, try to describe a template for their tweets. I "
            "want to take a generic sentence and rephrase it to sound like one of their tweets, "
            "with the same style/punctuation/capitalization/wording/tone/etc. as them. Only give "
            "me the template description, nothing else. User History: {} Answer:"),
    ),
)}

# Every field any task's items carry: an item with another task's field is of another task.
ALL_ITEM_FIELDS = frozenset(f for t in TASKS.values() for f in t.item_fields)
_ALIASES = {t.oppu_dir: t.name for t in TASKS.values()} | {"LaMP_2": "LaMP_2M", "LaMP-2": "LaMP_2M"}

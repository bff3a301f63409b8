"""Tiny run configs (tests/tiny_run.py) and a tiny random T5 checkpoint; the tiny Llama is the
session fixture `tiny_model_dir` of tests/conftest.py."""


import pytest

from tiny_run import tiny_config  # noqa: F401 (the pipeline tests import it from here)


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory):
  """A random FlanT5-shaped checkpoint with its own T5 tokenizer (tokenizer.json), trained on the
  generated data of the tasks the T5 tests run, so a run's text is not all <unk>."""
  pytest.importorskip("torch")
  import tiny_t5
  from oppu_jax.data import synth, tasks

  path = tmp_path_factory.mktemp("tiny_t5")
  corpus = []
  for task in ("LaMP_2M", "LaMP_5"):
    data = synth.synthesize(task, seed=0, num_users=6, history_min=4, history_max=7,
                            queries_per_user=2, text_words=8)
    for user in data.users:
      corpus += [" ".join(str(v) for v in item.values()) for item in user.history]
      corpus += [q.input for q in user.queries] + [str(q.gold) for q in user.queries]
    corpus += list(tasks.get_task(task).labels or ())
  tokenizer = tiny_t5.save_t5_tokenizer(path, corpus, vocab_size=800)
  tiny_t5.save_t5(path, "flan", vocab_size=len(tokenizer))
  return str(path)

from oppu_jax.eval import metrics, report, significance


def _grid():
  golds = {f"q{i}": str(1 + i % 5) for i in range(20)}
  off_by = lambda k: {q: str(min(5, int(g) + (i % k == 0))) for i, (q, g) in enumerate(golds.items())}
  preds = {"non_personalized": {q: "5" for q in golds}, "rag_k1": off_by(2),
           "rag_k2": off_by(3), "oppu_k0": dict(golds)}
  results = {s: metrics.evaluate("LaMP_3", golds, p) for s, p in preds.items()}
  return golds, preds, results, significance.grid_tests("LaMP_3", golds, preds, results)


def _row(table, setting):
  line = next(l for l in table.splitlines() if l.startswith(f"| {setting} |"))
  return [c.strip() for c in line.strip("|").split("|")][1:]


def test_cells_carry_rank_and_the_marks_the_tests_give():
  golds, _, results, tests = _grid()
  table = report.markdown_table("LaMP_3", results, tests=tests, num_queries=20, num_users=4)
  assert tests.best_rag == "rag_k2"
  mae = dict(zip(results, (_row(table, s)[0] for s in results)))
  # oppu_k0 is exact: best (bold), better than both references; rag_k2 second (underlined).
  assert mae["oppu_k0"] == f"**{results['oppu_k0']['mae']:.4f}*†**"
  assert mae["rag_k2"].startswith("<u>") and mae["rag_k2"].endswith("</u>")
  for setting in results:
    want = ("*" if tests.vs_baseline.get(setting, {}).get("mae", None) and
            tests.vs_baseline[setting]["mae"].better else "")
    want += ("†" if tests.vs_best_rag.get(setting, {}).get("mae", None) and
             tests.vs_best_rag[setting]["mae"].better else "")
    assert mae[setting].replace("**", "").replace("<u>", "").replace("</u>", "") == (
        f"{results[setting]['mae']:.4f}{want}")
  assert "20 queries of 4 users." in table
  assert "two-sided paired t-test over queries, p < 0.05" in table
  assert "the best RAG setting (rag_k2, by mae)" in table


def test_without_references_the_caption_says_there_are_no_marks():
  golds, preds, _, _ = _grid()
  only = {"oppu_k0": preds["oppu_k0"]}
  results = {"oppu_k0": metrics.evaluate("LaMP_3", golds, only["oppu_k0"])}
  tests = significance.grid_tests("LaMP_3", golds, only, results)
  table = report.markdown_table("LaMP_3", results, tests=tests, num_queries=20, num_users=4)
  assert "No significance marks" in table and "*" not in _row(table, "oppu_k0")[0]


def test_rouge_caption_says_mean_not_bootstrap():
  results = {"non_personalized": {"rouge-1": 0.5, "rouge-L": 0.4}}
  assert "plain mean over queries" in report.markdown_table("LaMP_4", results)

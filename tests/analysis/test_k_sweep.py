"""k sweep: each point is the MAE of its own setting's predictions, computed here by hand."""

import pytest

from analysis_helpers import golds_and_preds, mae, read, table_rows


def test_points_are_each_settings_mae(analysed):
  _, workdir = analysed
  data = read(workdir, "k_sweep")
  assert data["ks"] == [0, 1]
  names = {"RAG": ["non_personalized", "rag_k1"], "OPPU + RAG": ["oppu_k0", "oppu_k1"]}
  for series, settings in names.items():
    assert data["series"][series] == pytest.approx([mae(*golds_and_preds(workdir, s))
                                                   for s in settings])
  rows = table_rows(workdir, "k_sweep")
  assert [r[0] for r in rows] == ["0", "1"]
  assert [float(r[1]) for r in rows] == pytest.approx(data["series"]["RAG"], abs=5e-5)

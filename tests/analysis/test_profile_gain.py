"""Profile size vs gain: per-user gains by hand from the prediction files, and the regression's
slope and 95 % interval by the textbook formulas."""

import os

import numpy as np
import pytest
from scipy import stats

from analysis_helpers import golds_and_preds, mae, read


def test_gains_and_slope_interval(analysed):
  config, workdir = analysed
  from oppu_jax.data import lamp

  data = lamp.load(os.path.join(workdir, "data"), "LaMP_3")
  test, _ = lamp.select_users(data, config.data.num_test_users, config.data.test_users)
  base, peft = golds_and_preds(workdir, "non_personalized"), golds_and_preds(workdir, "oppu_k0")
  sizes, gains = [], []
  for user in test.users:
    ids = [q.id for q in user.queries]
    sizes.append(len(user.history))
    gains.append(mae(*base, ids) - mae(*peft, ids))  # MAE: lower is better
  result = read(workdir, "profile_gain")
  assert result["sizes"] == sizes
  assert result["gains"] == pytest.approx(gains)
  if np.ptp(gains) > 0:
    _check_interval(result["fit"], sizes, gains)
  else:  # a tiny run's gains may all be equal: no interval, and the caption says so
    assert np.isnan(result["fit"]["low"])


def test_the_studys_improvement_is_plus_or_minus_one_without_unchanged_users():
  from oppu_jax.analysis import profile_gain

  users, gains = profile_gain.study_improvements(["a", "b", "c", "d"], [0.25, 0.0, -0.5, 1e-9])
  assert users == ["a", "c", "d"] and gains == [1.0, -1.0, 1.0]


def test_slope_interval_textbook():
  from oppu_jax.analysis import profile_gain

  rng = np.random.default_rng(0)
  x = rng.integers(4, 50, 30)
  y = 0.01 * x + rng.normal(0, 0.2, 30)
  _check_interval(profile_gain.slope_interval(x, y), x, y)


def _check_interval(fit, sizes, gains):
  x, y = np.array(sizes, float), np.array(gains, float)
  n = len(x)
  sxx = ((x - x.mean()) ** 2).sum()
  slope = ((x - x.mean()) * (y - y.mean())).sum() / sxx
  residual = y - (y.mean() + slope * (x - x.mean()))
  stderr = np.sqrt((residual ** 2).sum() / (n - 2) / sxx)
  half = stats.t.ppf(0.975, n - 2) * stderr
  assert fit["slope"] == pytest.approx(slope, abs=1e-12)
  assert (fit["low"], fit["high"]) == pytest.approx((slope - half, slope + half), abs=1e-12)

"""The suite's scheduling: under pytest-xdist every test is sent with its file's group
(tests/conftest.py; tests/analysis/ is one group), so a module or session fixture is built by one
worker only. pytest 9.2 silently broke this (pyproject pins pytest below it)."""

import os

import pytest


def test_this_test_runs_in_its_files_group(request):
  if not os.environ.get("PYTEST_XDIST_WORKER"):
    pytest.skip("no worker groups without pytest-xdist (-n 0)")
  assert request.node.nodeid.endswith("@tests/test_worker_groups.py")

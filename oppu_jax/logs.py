"""The log of a command: INFO about what the command did, not what its libraries narrate."""

from __future__ import annotations

import logging


def quiet_libraries() -> None:
  """INFO level on the root and absl handlers, with orbax's and jax's INFO lines dropped (they
  narrate every checkpoint read and write)."""
  logging.getLogger().setLevel(logging.INFO)
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(_not_library_info)


def _not_library_info(record: logging.LogRecord) -> bool:
  noisy = ("orbax" in record.pathname or "/jax/" in record.pathname)
  return record.levelno >= logging.WARNING or not noisy

"""The errors a user can fix. `main.py` catches `OppuError` only and prints its message, which is
one line naming the config key, file, record or path at fault; any other exception is a bug and
keeps its traceback.

They subclass ValueError too, so library callers that already catch ValueError keep working.
"""

from __future__ import annotations


class OppuError(ValueError):
  """Bad input from the user (config, data, model files, adapters, workdir); one-line message."""


class ConfigError(OppuError):
  """A config value that cannot work; the message names the key (`config.peft.method: ...`)."""


class DataError(OppuError):
  """Bad input data; the message names the file and the record."""


class ModelError(OppuError):
  """A model path or checkpoint that cannot be loaded; the message names the file."""


class AdapterFormatError(OppuError):
  """An adapter directory that cannot be read or written; the message names the file."""


class WorkdirError(OppuError):
  """The workdir holds another run, or cannot be used; the message names the workdir."""

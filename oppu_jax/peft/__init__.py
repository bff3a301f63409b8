"""PEFT methods behind one interface (method.py); the built-in ones register on import."""

from oppu_jax.peft import ia3, lora, prompt_tuning  # noqa: F401 (registers the methods)

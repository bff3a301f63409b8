"""Ahead-of-time compilation for chips this host does not have: every program of a run, for a
model's published shapes, compiled for a TPU slice (libtpu's topologies) or NVIDIA GPUs (the
CUDA plugin's deviceless compilation), with its memory per device, FLOPs and collectives, and a
planner for the mesh and the users per step. `python -m oppu_jax.compile_check --help`.
"""

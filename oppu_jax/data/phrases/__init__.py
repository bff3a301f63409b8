"""Families of paraphrases for the meaning-cued generator (`oppu_jax/data/synth_meaning.py`): each
family evokes one label, rating, method or problem through what its phrases mean, so no shared
surface word gives the answer away. Every family has an even length: each user owns one half.
"""

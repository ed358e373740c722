"""Inputs: the corpus a model runs over, the per-token features attached to it, and the bundled stimuli.
"""

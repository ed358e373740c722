"""Checkpoints: files in other formats read as torch-named tensors, the architecture discovered from
shapes, and the runnable model built from them.
"""

"""Findings: the reproduction study on the sample models, rendered into the README and the docs.
"""

"""Findings: the reproduction study on the sample models, rendered into the docs (docs/findings.md).
"""

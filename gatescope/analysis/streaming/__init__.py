"""The analyses in one pass over a corpus: mergeable accumulators, the analyses built on them, and
their labels read alongside the corpus.
"""

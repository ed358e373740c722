"""Runs: a model over a corpus, traced to files and shards or streamed through analyses, on one process
or under torchrun.
"""

"""Runs: a model over a corpus, traced to files and shards or streamed through analyses, on one process
or under torchrun.
"""

CHUNK_STEPS = 4096  # steps of one chunk of a long sequence by default (gatescope.runs.chunks)

"""Traces: recorded quantities by name (Trace), and the trace file format (one writer, one reader, shards).
"""

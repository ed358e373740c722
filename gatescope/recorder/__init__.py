"""The recorder: the gate equations, the engine that runs torch-style LSTM/GRU stacks through them,
and record(): every gate at every step, hook points and interventions. Imports no analysis and no Textual.
"""

"""Stimuli for gatescope's analyses: agreement sentences with per-token labels
(`gatescope.stimuli.agreement`) and per-character features of Python source
(`gatescope.stimuli.code_features`)."""

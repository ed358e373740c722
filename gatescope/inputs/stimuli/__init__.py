"""Stimuli for gatescope's analyses: agreement sentences with per-token labels
(`gatescope.inputs.stimuli.agreement`) and per-character features of Python source
(`gatescope.inputs.stimuli.code_features`)."""

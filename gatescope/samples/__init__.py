"""Training code of the bundled sample models (`gatescope samples train`): see `train.py`."""

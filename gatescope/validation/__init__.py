"""The validation layer: every file gatescope reads is checked here, once, at the door.

One module per file kind, each with one entry point that the readers call first:

- `gatescope.validation.safetensors.read_header`: any safetensors file (bounded header, entries);
- `gatescope.validation.checkpoint.validate_checkpoint`: a model checkpoint (gatescope.checkpoints.loader);
- `gatescope.validation.trace.validate_trace`: a trace file (gatescope.traces.file, the browser);
- `gatescope.validation.text`: agreement stimuli TSV and per-token label files.

Every field's type, range and consistency is checked there, with a one-line GatescopeError naming
the file, the field and what was expected; the code behind the door trusts what it is given.
Resource limits (gatescope.validation.limits) are enforced before anything is allocated, and
files are opened through gatescope.files, which refuses FIFOs, devices and folders and reads
text a bounded line at a time.

Why typed dataclasses and one validator module (gatescope.validation.schema), not pydantic or
msgspec: the schemas are small (a dozen metadata keys per format), and what matters most is not
expressible in a schema language anyway (a tensor's bytes against the file's size, offsets against
row counts, a quantity's width against its module): that is plain code either way. The dataclasses
keep every message ours and on one line (pydantic's span several lines and name its own types),
need no dependency (msgspec is not installed; pydantic would be a new hard dependency), cost
nothing at import (the browser and ``import gatescope`` stay torch- and pydantic-free), and check
strictly (a bool is not an int, "2" is not 2), which is what a file format wants.

This package imports nothing at import time; import the module you need.
"""

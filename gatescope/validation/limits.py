"""The resource limits of everything gatescope reads: what no valid file exceeds.

A file that claims more (a header of a gigabyte, a layer number of 5,000 digits, a billion
layers, a line without end) is refused before anything is allocated for it. The limits are
far above any real model or trace (the largest LSTM language models have a few thousand units
and a few layers) and far below what would exhaust a machine.
"""
MAX_HEADER_BYTES = 100_000_000  # a safetensors JSON header (safetensors' own limit)
# What parsing a header may build: Python spends ~60 bytes on an empty object and 8 on a list entry, so
# 100 MB of "{}," would take 2 GB. Counted in the raw bytes before parsing; a real header (a few
# entries a tensor, a vocabulary inside one metadata string) stays far below.
MAX_HEADER_CONTAINERS = 2**20  # "{" and "[" in a header
MAX_HEADER_ITEMS = 2**23  # "," in a header
MAX_NPY_HEADER_BYTES = 10_000  # a .npy header (numpy's own default limit)
MAX_LINE_BYTES = 10 * 2**20  # one line of a text file (stimuli, labels, inputs)
MAX_NAME_CHARS = 1_000  # a tensor's or a module's name
MAX_DIMS = 8  # dimensions of one tensor
MAX_DIM = 2**31 - 1  # one dimension (int32, as torch's and ONNX's exporters bound it)
MAX_LAYERS = 1_000  # layers of one recurrent module (a parameter key's _l{k})
MAX_UNITS = 2**20  # units of one recorded quantity, or a module's hidden / projection size
MAX_VOCAB = 10_000_000  # entries of a vocabulary
MAX_JSON_DEPTH = 100  # nesting of any JSON document gatescope reads (its own files nest 4 deep)
MAX_JSON_BYTES = 64 * 2**20  # a JSON document read whole (an index, a ranking, a --vocab list, a Keras config)
MAX_WHOLE_BYTES = 64 * 2**20  # a text file read as one sequence (trace --whole; --max-whole-mb raises it)
MAX_INFLATION = 100  # declared bytes per stored byte of a zip member or an HDF5 dataset (a bomb declares more)
MAX_ARCHIVE_MEMBER_BYTES = 2**31  # the declared size of one zip member read whole (a .keras archive's weights)
MAX_ONNX_BYTES = 2**31 - 1  # an ONNX model file (protobuf's own limit for one message)

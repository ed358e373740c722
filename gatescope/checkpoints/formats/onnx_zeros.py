"""Values an ONNX graph always computes as zeros, whatever its input: the initial states torch's exporter writes.

torch.onnx.export gives an LSTM / GRU node that starts from zeros an ``initial_h`` computed in the graph
(a ConstantOfShape of zero, expanded and sliced to the batch). Read as a checkpoint, such a state is
zeros, and nothing needs saying; any other computed state does (gatescope.checkpoints.formats.onnx).
"""
from __future__ import annotations

import numpy as np

ZERO_KEEPING = frozenset({  # ops whose output is zeros wherever their first input is
    "Expand", "Slice", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Identity", "Cast", "Tile", "Gather", "Flatten",
})


def always_zero(graph, value: str) -> bool:
    """Whether ``value`` of ``graph`` is zeros whatever the input: a zero initializer or Constant, a
    ConstantOfShape of zero, and what Expand / Slice / Reshape / Concat / ... make of zeros (the initial
    states torch's exporter writes). False when unsure."""
    from onnx import numpy_helper

    producers = {out: node for node in graph.node for out in node.output}
    stored = {init.name: init for init in graph.initializer}

    def zero(name: str, depth: int) -> bool:
        if name in stored:
            return not np.any(numpy_helper.to_array(stored[name]))
        node = producers.get(name)
        if node is None or depth > 64:
            return False
        if node.op_type in ("ConstantOfShape", "Constant"):
            attr = next((a for a in node.attribute if a.name == "value"), None)
            return (attr is None and node.op_type == "ConstantOfShape") or (
                attr is not None and not np.any(numpy_helper.to_array(attr.t)))
        if node.op_type == "Concat":
            return all(zero(i, depth + 1) for i in node.input if i)
        return node.op_type in ZERO_KEEPING and bool(node.input) and zero(node.input[0], depth + 1)

    return zero(value, 0)

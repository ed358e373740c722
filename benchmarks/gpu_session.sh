#!/usr/bin/env bash
# Everything a session with a lent GPU measures, as one run: the tests that need CUDA (they skip without
# it), then bench_record, bench_trace and bench_stream on the GPU (record against cuDNN; the trace's
# throughput; the 2 x 650 LSTM streamed). Each step's output goes to OUT (default: gpu_session/), and a
# step that fails does not stop the next. Usage, from the repository's root on the GPU machine:
#   bash benchmarks/gpu_session.sh [OUT]      (on the lent device machine: bash benchmarks/gpu_session.sh "$OUT")
set -uo pipefail
out="${1:-gpu_session}"
if ! python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_session: no CUDA device here (torch.cuda.is_available() is False)" >&2
  exit 1
fi
mkdir -p "$out"
{ nvidia-smi; python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } \
  > "$out/device.txt" 2>&1
status=0
step() {  # step NAME COMMAND...: run it, keep its output, remember a failure
  local name=$1; shift
  echo "== $name: $*"
  /usr/bin/time -f "$name: %e s" "$@" > "$out/$name.txt" 2>&1 || status=1
  tail -n 12 "$out/$name.txt"
}
step tests python -m pytest -q -m "slow or not slow" -rs -k "cuda"
step bench_record python benchmarks/bench_record.py --device cuda --repeats 3
step bench_trace python benchmarks/bench_trace.py --device cuda --repeats 3
step bench_stream python benchmarks/bench_stream.py --device cuda --size 2x650 --quick
exit $status

"""What compiling the encoder costs and gains on CPU, in a fresh process (not a test).

    TORCHINDUCTOR_CACHE_DIR=/tmp/c PYTHONPATH=$PWD .venv/bin/python \\
        tests/benchmarks/bench_features_compile.py compiled   # twice: cold, then warm cache
    PYTHONPATH=$PWD .venv/bin/python tests/benchmarks/bench_features_compile.py eager

Prints the first call's time (compilation, or loading it from the cache), the per-patch
cosine to eager fp32, and patches/s of the encoder alone (folded BatchNorm, channels_last,
batch 32, 224 px, random weights) over 3 batches after the first; "total" is the whole
process including imports. The ``--compile auto`` threshold follows from these numbers
(docs/features.md, docs/benchmarks.md).
"""

import sys
import time

t0 = time.perf_counter()
import torch  # noqa: E402

from cmta_pipeline.features.encoder import build_encoder  # noqa: E402
from cmta_pipeline.features.runner import fold_batchnorm  # noqa: E402

threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
torch.set_num_threads(threads)
model, _ = build_encoder("random")
model = fold_batchnorm(model).to(memory_format=torch.channels_last)
x = torch.randn(32, 3, 224, 224).contiguous(memory_format=torch.channels_last)
mode = sys.argv[1] if len(sys.argv) > 1 else "compiled"
with torch.inference_mode():
    if mode == "compiled":
        run = torch.compile(model, dynamic=False, options={"freezing": True})
        t = time.perf_counter()
        y = run(x)
        print("first call (compile)", round(time.perf_counter() - t, 2), flush=True)
        cos = torch.nn.functional.cosine_similarity(y.double(), model(x).double()).min()
        print("min cosine to eager", float(cos))
    else:
        run = model
        run(x)
    t = time.perf_counter()
    for _ in range(3):
        run(x)
    print(mode, "patches/s", round(96 / (time.perf_counter() - t), 1), "total s",
          round(time.perf_counter() - t0, 1), flush=True)

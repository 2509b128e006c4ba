"""Settings every test run shares.

Real-model tests must not depend on the machine: `dtype: auto` picks float32 or
bfloat16 by timing decode steps, and bf16 greedy output differs from fp32's. So
the whole suite pins what `auto` means to float32 (recipe files the tests run
included); tests that build their own model specs also say `dtype: float32`.
"""

import os

os.environ["ORCHESTRA_AUTO_DTYPE"] = "float32"

"""Settings every test run shares.

Real-model tests must not depend on the machine: `dtype: auto` is bfloat16 on a
GPU and, on a CPU, whichever of float32/bfloat16 decodes faster (a timing
probe), and bf16 greedy output differs from fp32's. So every test that loads the
real model through the local backend says `dtype: float32` in its model spec
(recipes it runs included), and `_real_models_say_their_dtype` fails any test
that leaves it to `auto`, on every machine. Processes a test starts (`orchestra
serve`) cannot be watched that way; for them `auto` is pinned to float32.
"""

import os

import pytest

os.environ["ORCHESTRA_AUTO_DTYPE"] = "float32"

#: `triton_device`: Triton kernels compiled on a GPU, interpreted in a fresh process on a CPU.
#: `browser`: headless Chromium over the DevTools protocol (tests/browser.py).
pytest_plugins = ["triton_device", "browser"]


@pytest.fixture(scope="session", autouse=True)
def _real_models_say_their_dtype():
    """A local-backend model spec with `dtype: auto` fails the test that built it, before any loading."""
    from orchestra.backends.local import LocalBackend

    resolve = LocalBackend._resolve_dtypes

    def pinned_only(self, spec):
        if spec.dtype == "auto":
            pytest.fail(
                f"model {spec.model!r} has dtype 'auto', which depends on the machine: "
                "a test that loads a real model says dtype: float32 (see tests/conftest.py)",
                pytrace=False,
            )
        return resolve(self, spec)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalBackend, "_resolve_dtypes", pinned_only)
        yield

"""Counting the host work of engine code: values read back from tensors, tensors built from Python data.

On a GPU both cost a round trip: a read (`.item()`, `.tolist()`, `.cpu()`,
`int(t)`, `float(t)`, `bool(t)`, `torch.cuda.synchronize()`) stalls the host
until the device has caught up, and a tensor built from a Python list
(`torch.tensor`, `torch.as_tensor`) is a copy from host memory. A decode step
needs one read (the sampled tokens) and, at most, one small upload (the step's
tokens and positions); every other one is launch time lost. The same calls are
made on a CPU, so counting them there (the tests do, `bench/eager_step.py`
reports them) keeps them from creeping back without a GPU at hand.

The counters patch torch for the whole process while they are active (the
engine steps on its own thread), so nothing else should run tensor code meanwhile.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

#: Tensor methods that hand a value to the host.
_READS = ("item", "tolist", "cpu", "numpy", "__int__", "__float__", "__bool__", "__index__")
#: torch functions that build a tensor from host data.
_BUILDS = ("tensor", "as_tensor")


@contextmanager
def counting_host_work() -> Iterator[Counter]:
    """Count reads (`"reads"`) and host-built tensors (`"uploads"`) while the block runs."""
    counts: Counter = Counter({"reads": 0, "uploads": 0})

    def counted(function: Callable, kind: str) -> Callable:
        def wrapper(*args, **kwargs):
            counts[kind] += 1
            return function(*args, **kwargs)
        return wrapper

    saved_methods = {name: getattr(torch.Tensor, name) for name in _READS}
    own_methods = {name: torch.Tensor.__dict__.get(name) for name in _READS}  # None: inherited
    saved_functions = {name: getattr(torch, name) for name in _BUILDS}
    saved_synchronize = torch.cuda.synchronize
    try:
        for name, method in saved_methods.items():
            setattr(torch.Tensor, name, counted(method, "reads"))
        for name, function in saved_functions.items():
            setattr(torch, name, counted(function, "uploads"))
        torch.cuda.synchronize = counted(saved_synchronize, "reads")
        yield counts
    finally:
        for name, own in own_methods.items():
            if own is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, own)
        for name, function in saved_functions.items():
            setattr(torch, name, function)
        torch.cuda.synchronize = saved_synchronize


def count_host_work(run: Callable[[], object]) -> Counter:
    """The reads and host-built tensors of one call of `run`."""
    with counting_host_work() as counts:
        run()
    return counts

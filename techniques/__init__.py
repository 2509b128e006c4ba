"""Built-in techniques, scorers and process reward models; importing this package registers them.

Each registered technique, scorer and PRM lives in a module named for it (the
sub-packages group scorers, PRMs, step-wise searches and code techniques), and
registers itself with its decorator when imported. This package imports every
module under it, so adding a built-in is one new file and no other edit.
Modules whose names start with `_` hold helpers several of them share.
"""

import importlib
import pkgutil

for _module in pkgutil.walk_packages(__path__, prefix=f"{__name__}."):
    importlib.import_module(_module.name)

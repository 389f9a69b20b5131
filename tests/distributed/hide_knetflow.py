"""A worker preload for tests: knetflow cannot be imported on this worker."""

import sys


class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name == "knetflow" or name.startswith("knetflow."):
            raise ImportError("No module named 'knetflow' (hidden by the test preload)")


def dask_setup(worker):
    for name in [m for m in sys.modules if m == "knetflow" or m.startswith("knetflow.")]:
        del sys.modules[name]
    sys.meta_path.insert(0, _Hide())

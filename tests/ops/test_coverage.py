"""Every registered op is exercised by at least one harness case."""

import importlib
import pkgutil

import knetflow as kf
import tests.ops
from tests.ops.harness import ops_used

# ops that no harness case can build, with the test that covers them instead
EXEMPT = {
    "fused": "made only by the fusion pass; tests/graph/passes/test_fuse.py",
    "get": "used with multi-output ops; tests/graph/test_multi_output.py",
    "send": "made only by partitioning; tests/scheduler/test_partition.py, test_executor.py",
    "recv": "made only by partitioning; tests/scheduler/test_partition.py, test_executor.py",
}


def all_cases():
    cases = []
    for info in pkgutil.iter_modules(tests.ops.__path__):
        if info.name.startswith("test_") and info.name != "test_coverage":
            module = importlib.import_module(f"tests.ops.{info.name}")
            cases.extend(getattr(module, "CASES", []))
    return cases


def test_every_registered_op_has_a_case():
    covered = set()
    for case in all_cases():
        covered |= ops_used(case)
    missing = set(kf.REGISTRY) - covered - set(EXEMPT)
    assert not missing, f"registered ops with no harness case: {sorted(missing)}"

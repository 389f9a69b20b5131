"""Cost estimates the placer uses: work per node and time per transfer.

Rough on purpose: they only need to rank choices (this device or that one,
move this tensor or not). Work is in floating-point operations, from static
shapes; time is work over a device kind's rate, which each kind declares
(`DeviceKind.flops`, read from the device registry when a model is made).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from knetflow.devices import registry


@dataclass(frozen=True)
class CostModel:
    """Device speeds (flop/s by kind; the kinds' own figures by default) and the link
    between devices."""

    flops: dict = field(default_factory=registry.flops)
    bandwidth: float = 1e10      # bytes per second between two devices
    latency: float = 2e-5        # seconds per transfer (hand-off included)

    def compute_time(self, node, kind: str) -> float:
        return work(node) / self.flops.get(kind, 2e10)

    def transfer_time(self, node) -> float:
        return self.latency + (node.spec.nbytes or 0) / self.bandwidth


def work(node) -> float:
    """Approximate flops of one node (0 for leaves)."""
    if node.is_leaf:
        return 0.0
    out = _size(node.spec)
    if node.op in ("matmul", "bmm"):
        a = node.inputs[0].spec.shape
        inner = a[-1] if a else 1
        return 2.0 * out * (inner or 1)
    if node.op in ("conv4", "deconv4"):
        w = node.inputs[0].spec.shape
        return 2.0 * out * float(np.prod(w[1:]))
    return float(max(out, sum(_size(i.spec) for i in node.inputs)))


def _size(spec) -> int:
    size = getattr(spec, "size", None)
    if size is None and isinstance(spec, tuple):
        return sum(_size(s) for s in spec)
    return size or 0

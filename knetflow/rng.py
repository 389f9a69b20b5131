"""The random state every knetflow random source draws from (`kf.seed`)."""

from __future__ import annotations

import numpy as np

_root = np.random.SeedSequence()
_generator = np.random.default_rng(_root.spawn(1)[0])


def seed(n: int) -> None:
    """Seed every random source knetflow uses (initializers, dropout, shuffling, splits).

    Example:
        >>> import knetflow as kf
        >>> kf.seed(1); a = kf.init.gaussian(3)
        >>> kf.seed(1); b = kf.init.gaussian(3)
        >>> bool((a == b).all())
        True
    """
    global _root, _generator
    _root = np.random.SeedSequence(int(n))
    _generator = np.random.default_rng(_root.spawn(1)[0])


def entropy() -> int:
    """The seed given to `kf.seed` (or the fresh entropy used when it was never called)."""
    return int(_root.entropy)


def generator() -> np.random.Generator:
    """The shared generator (initializers, shuffling, eager random ops)."""
    return _generator


def spawn() -> np.random.SeedSequence:
    """A child seed for a new independent stream (a plan, a device, a worker)."""
    return _root.spawn(1)[0]

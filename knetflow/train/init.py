"""`kf.init`: Knet's initializer functions and MXNet's initializer classes, by one name.

Knet's functions (`xavier_uniform`, `xavier`, `xavier_normal`, `gaussian`,
`bilinear`, `zeros`, `ones`) take dims and return an array; they live on the
ground floor, in `knetflow/initializers.py`, because layers and the scheduler
draw with them too. MXNet's classes (`Uniform`, `Normal`, `Orthogonal`,
`Xavier`, `Load`, `Mixed`, ...) and `create`, an initializer by name, are
`knetflow/train/initializer_classes.py`. This module only shows both:

    >>> import knetflow as kf
    >>> kf.init.xavier(3, 2).shape, type(kf.init.create("xavier")).__name__
    ((3, 2), 'Xavier')
"""

from __future__ import annotations

from knetflow.initializers import (
    bilinear,
    gaussian,
    initial_value,
    ones,
    xavier,
    xavier_normal,
    xavier_uniform,
    zeros,
)
from knetflow.train.initializer_classes import (
    Constant,
    Initializer,
    Load,
    Mixed,
    Normal,
    One,
    Orthogonal,
    Uniform,
    Xavier,
    Zero,
    create,
)

__all__ = [
    "Constant",
    "Initializer",
    "Load",
    "Mixed",
    "Normal",
    "One",
    "Orthogonal",
    "Uniform",
    "Xavier",
    "Zero",
    "bilinear",
    "create",
    "gaussian",
    "initial_value",
    "ones",
    "xavier",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]

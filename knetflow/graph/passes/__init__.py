"""Graph -> Graph rewrites run by the compiler; each is testable alone.

A pass returns the same Graph object when it changed nothing.
"""

from knetflow.graph.passes.cse import eliminate_common_subexpressions  # noqa: F401
from knetflow.graph.passes.dce import eliminate_dead_code  # noqa: F401
from knetflow.graph.passes.dropout import strip_dropout  # noqa: F401
from knetflow.graph.passes.fold import fold_constants  # noqa: F401
from knetflow.graph.passes.fuse import fuse_elementwise  # noqa: F401
from knetflow.graph.passes.project import fold_embedding_projections  # noqa: F401
from knetflow.graph.passes.pool_relu import fuse_relu_into_pool_grad  # noqa: F401
from knetflow.graph.passes.rewrite import rewrite  # noqa: F401
from knetflow.graph.passes.simplify import (  # noqa: F401
    simplify_broadcasts, simplify_powers, simplify_units)


def optimize(graph, training=True, fuse=True):
    """The standard pipeline: strip dropout (inference), fold constants and table lookups
    through RNN input matrices, simplify powers, products by 1 and spread values, CSE,
    fuse, DCE."""
    if not training:
        graph = strip_dropout(graph)
    graph = fold_embedding_projections(fold_constants(graph))
    graph = simplify_broadcasts(simplify_units(simplify_powers(graph)))
    graph = eliminate_common_subexpressions(graph)
    if fuse:
        graph = fuse_relu_into_pool_grad(graph)
        graph = fuse_elementwise(graph)
    return eliminate_dead_code(graph)

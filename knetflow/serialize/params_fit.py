"""Param values that fit a graph: none missing, none extra, unless the caller asks.

A model file holds a value for every param of its graph and for nothing else,
and a checkpoint's params file fits its symbol file the same way
(docs/FORMAT.md, "Params and their values"). Without the check, a file whose
values were dropped would load and predict with freshly drawn weights.

`load_checkpoint` relaxes either rule on request, as MXNet's
`Module.set_params(allow_missing=..., allow_extra=...)` does: `draw_missing`
initializes the missing params from their `init`, and the caller says which.

Example:
    >>> import numpy as np
    >>> from knetflow.graph.node import Graph
    >>> from knetflow.graph.build import param
    >>> g = Graph([param("w", (2,)) * 2])
    >>> refuse_extra(g, {"w": np.ones(2), "v": np.ones(2)}, "params")
    Traceback (most recent call last):
    ...
    knetflow.errors.FormatError: params holds a value for 'v', which is not a param of the graph
"""

from __future__ import annotations

from knetflow.errors import FormatError


def refuse_missing(where: str, hint: str = ""):
    """A `fill` for decode_graph that refuses a param with no value in `where`."""
    def fill(name, spec, init, what):
        raise FormatError(f"{what}: param {name[:60]!r} has no value in {where}{hint}")
    return fill


def draw_missing(graph) -> dict:
    """Initial values for the params of `graph` that have none, from their `init`.

    Draws come from `kf.seed`'s stream, in the order of the graph's params, as
    compiling the graph would draw them. Call it once the graph has passed every
    check: nothing is drawn for a file that is refused.
    """
    from knetflow import initializers

    drawn = {}
    for node in graph.params:
        if node.attrs.get("value") is not None:
            continue
        name, init, spec = node.attrs["name"], node.attrs.get("init"), node.spec
        try:
            drawn[name] = initializers.initial_value(init, spec.shape, spec.dtype)
        except KeyError:
            raise FormatError(f"param {name[:60]!r} has no value and its init "
                              f"{init[:40]!r} is not a knetflow initializer") from None
        except (MemoryError, ValueError):  # ValueError: more bytes than NumPy can address
            raise FormatError(f"param {name[:60]!r} has no value and its spec {spec!r} is "
                              f"too large to initialize") from None
    return drawn


def refuse_extra(graph, values, where: str, hint: str = "") -> None:
    """FormatError if `values` holds a name that is not a param of `graph`."""
    params = {n.attrs["name"] for n in graph.params}
    extra = [name for name in values if name not in params]
    if extra:
        names = ", ".join(repr(name[:60]) for name in extra[:5])
        more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        many = "values for" if len(extra) > 1 else "a value for"
        which = "which are not params" if len(extra) > 1 else "which is not a param"
        raise FormatError(f"{where} holds {many} {names}{more}, {which} of the graph{hint}")

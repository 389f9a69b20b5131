"""Max-pool gradient and relu gradient in one op: relu_grad(pool_grad(x, y, dy), x)
becomes pool_relu_grad(x, y, dy).

The backward of pool(relu(z)) sends dy back through the pool (`pool_grad`, an array of
x's size) and then keeps it where the relu's output x is positive (`relu_grad`), which
reads that array again and writes another: in LeNet's first layer 4.6 MB each way,
every step. `pool_relu_grad` keeps the gradient where x > 0 as it makes it (the bound
CPU kernel masks dy at the pooled size) and gives the same numbers as the two ops.

The rewrite needs the relu_grad's mask to be the pool_grad's x itself (the same node,
so the mask is x > 0), the pool_grad read by that relu_grad alone and not a graph
result (nobody else wants the unmasked array), both of one shape and dtype and on one
device, a CPU one or none named yet; otherwise the graph is left as it is. On a plan
whose device is a GPU the fused op runs pool_grad's cuDNN kernel and the product, the
unfused ops' own kernels.

Example:
    >>> import knetflow as kf, numpy as np
    >>> z = kf.placeholder("z", (2, 3, 4, 4))
    >>> w = kf.param("w", value=np.ones((2, 3, 4, 4), "float32"))
    >>> g = kf.backward(kf.Graph([kf.sum(kf.pool(kf.relu(z * w)))]))
    >>> [n.op for n in g.nodes if "grad" in n.op]
    ['pool_grad', 'relu_grad']
    >>> [n.op for n in fuse_relu_into_pool_grad(g).nodes if "grad" in n.op]
    ['pool_relu_grad']
"""

from __future__ import annotations

from knetflow.graph.node import Graph
from knetflow.graph.passes.dce import eliminate_dead_code
from knetflow.graph.passes.rewrite import rewrite


def _on_cpu(device) -> bool:
    """No device named yet (the plan's), or a CPU device: where the fused kernel is bound."""
    return device is None or str(device).split(":")[0] == "cpu"


def _fusable(relu_grad, users, results) -> bool:
    """relu_grad(pool_grad(x, y, dy), x), the pool_grad read by nothing else."""
    grad, mask = relu_grad.inputs
    return (grad.op == "pool_grad" and mask is grad.inputs[0] and not relu_grad.attrs
            and len(users[grad.id]) == 1 and grad.id not in results
            and grad.spec == relu_grad.spec and grad.device == relu_grad.device
            and _on_cpu(relu_grad.device))


def fuse_relu_into_pool_grad(graph: Graph) -> Graph:
    """Each relu_grad of a pool_grad over the relu's own output, made one pool_relu_grad
    node (the pool_grad's inputs and attributes, the relu_grad's name, device and line)."""
    users = graph.users()
    results = {o.id for o in graph.results}

    def visit(node, original):
        if original.op != "relu_grad" or not _fusable(original, users, results):
            return node
        grad = node.inputs[0]       # as rebuilt: its inputs are the rebuilt x, y and dy
        return node.replace(op="pool_relu_grad", inputs=grad.inputs, attrs=dict(grad.attrs))

    new = rewrite(graph, visit, originals=True)
    return graph if new is graph else eliminate_dead_code(new)  # the pool_grads left unread

"""The op registry and the public op functions, one module per family."""

from knetflow.ops.base import REGISTRY, Op, Spec, apply, get_op, register  # noqa: F401
from knetflow.ops.binary import (  # noqa: F401
    add, div, eq, ge, gt, le, lt, maximum, minimum, mul, ne, neg, pow, sub, where)
from knetflow.ops.elementwise import *  # noqa: F401,F403
from knetflow.ops import fused as _fused  # noqa: F401  (registers the op)
from knetflow.ops import cudnn as _cudnn  # noqa: F401,E402  (registers cuDNN's kernels)
from knetflow.ops.reduce import (  # noqa: F401
    broadcast_like, count, cumsum, max, mean, min, prod, std, sum, sum_to, var)
from knetflow.ops.linalg import *  # noqa: F401,F403,E402
from knetflow.ops.linalg_solve import *  # noqa: F401,F403,E402
from knetflow.ops.matrix import *  # noqa: F401,F403,E402
from knetflow.ops.array import *  # noqa: F401,F403,E402
from knetflow.ops.index import *  # noqa: F401,F403,E402
from knetflow.ops.rearrange import *  # noqa: F401,F403,E402
from knetflow.ops.softmax import *  # noqa: F401,F403,E402
from knetflow.ops.loss import *  # noqa: F401,F403,E402
from knetflow.ops.random import *  # noqa: F401,F403,E402
from knetflow.ops.norm import *  # noqa: F401,F403,E402
from knetflow.ops.embedding import *  # noqa: F401,F403,E402
from knetflow.ops.conv import *  # noqa: F401,F403,E402
from knetflow.ops.rnn_ops import *  # noqa: F401,F403,E402
from knetflow.ops.pool import *  # noqa: F401,F403,E402

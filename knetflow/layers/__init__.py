"""Stateful layers above the graph: objects that hold state between calls.

`kf.RNN` (weights and the carried `h`/`c`), `kf.bnmoments` (batchnorm's
running moments) with `kf.batchnorm`, `kf.dropout` (whose default drops only
in training), and the state-attribute protocol they share (`StateAttribute`
over knetflow/graph/state.py). The pure, stateless ops they use are in
knetflow/ops/.
"""

from knetflow.layers.batchnorm import batchnorm  # noqa: F401
from knetflow.layers.bn_moments import BNMoments, bnmoments, bnupdates  # noqa: F401
from knetflow.layers.dropout import dropout  # noqa: F401
from knetflow.layers.rnn import RNN, rnnparam, rnnparams  # noqa: F401
from knetflow.layers.state_attr import StateAttribute  # noqa: F401

__all__ = ["BNMoments", "RNN", "StateAttribute", "batchnorm", "bnmoments", "bnupdates",
           "dropout", "rnnparam", "rnnparams"]

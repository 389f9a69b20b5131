"""graph/pytree.py's one-level shortcut agrees with flatten and Tree.rebuild."""

from collections import namedtuple

import numpy as np
import pytest

from knetflow.graph import pytree

Pair = namedtuple("Pair", "a b")


class Row(tuple):
    """A tuple subclass that is not a namedtuple: flatten keeps it as a leaf."""


@pytest.mark.parametrize("x", [[1.0, np.ones(2)], (1, "s", None), {"b": 2.0, "a": 1.0},
                               np.ones(3), 0.5, [], {}])
def test_one_level_lists_flatten_s_leaves_and_rebuilds_like_a_tree(x):
    kind, leaves = pytree.one_level(x)
    flat, tree = pytree.flatten(x)
    assert list(leaves) == flat or (len(flat) == 1 and flat[0] is x)
    new = [f"leaf{i}" for i in range(len(flat))]
    assert pytree.rebuild_level(kind, x, new) == tree.rebuild(new)


def test_rebuild_level_keeps_the_keys_of_the_dict_it_is_given():
    assert pytree.rebuild_level(dict, {"z": 0, "y": 0}, [1, 2]) == {"z": 1, "y": 2}


def test_may_be_container_covers_every_type_flatten_walks():
    walked = [[1.0], {"a": 1.0}, (1.0,), Pair(1.0, 2.0)]
    for x in walked:
        assert pytree.may_be_container(type(x))
        assert pytree.is_container(x)
    for x in (1.0, np.ones(2), "s", None, np.float32(1)):
        assert not pytree.may_be_container(type(x)) and not pytree.is_container(x)
    # a tuple subclass may be walked (only a namedtuple is): its type alone cannot say
    assert pytree.may_be_container(Row) and not pytree.is_container(Row((1.0,)))

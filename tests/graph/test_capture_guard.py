"""Compiled capture guards give the walk's answer, or none at all."""

import functools
from collections import namedtuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.graph.capture import capture
from knetflow.graph.capture_guard import compile_guard
from knetflow.train.knet import trace_cache

Pair = namedtuple("Pair", "a b")


class Layer:
    def __init__(self, w, b):
        self.w, self.b = w, b

    def __call__(self, x):
        return x @ self.w + self.b


class Model:
    scale = 2.0

    def __init__(self):
        self.layers = [Layer(kf.Param(np.ones((3, 2))), kf.Param(np.zeros(2))),
                       Layer(kf.Param(np.ones((2, 1))), kf.Param(np.zeros(1)))]
        self.config = {"act": "tanh", "depth": 2}

    def loss(self, x):
        for layer in self.layers:
            x = layer(x)
        return kf.sum(x) * self.scale


def agrees(guard, f, args, kwargs, key) -> bool:
    """Checks the guard against the walk; whether the guard recognized the call."""
    found = guard(f, args, kwargs)
    walk = capture(f, args, kwargs)
    if found is None:
        return False
    leaves, objects = found
    assert walk.key == key
    assert len(leaves) == len(walk.leaves) and all(map(lambda a, b: a is b, leaves, walk.leaves))
    assert len(objects) == len(walk.objects)
    assert all(map(lambda a, b: a is b, objects, walk.objects))
    return True


def compiled(f, args, kwargs=None):
    kwargs = kwargs or {}
    cap = capture(f, args, kwargs)
    guard = compile_guard(f, args, kwargs, cap)
    assert guard is not None
    return guard, cap.key


def test_a_bound_method_of_a_model_is_recognized_with_its_new_arrays():
    m = Model()
    x = np.ones((4, 3))
    guard, key = compiled(m.loss, (x,))
    assert agrees(guard, m.loss, (np.zeros((4, 3)),), {}, key)
    m.layers[0].w = kf.Param(np.full((3, 2), 5.0))    # another Param, the same shape
    assert agrees(guard, m.loss, (x,), {}, key)
    assert guard(m.loss, (x,), {})[0][0] is m.layers[0].w


@pytest.mark.parametrize("change", [
    lambda m: setattr(m.layers[0], "w", kf.Param(np.ones((3, 3)))),   # a shape
    lambda m: setattr(m.layers[0], "w", kf.Param(np.ones((3, 2), np.float32))),  # a dtype
    lambda m: m.layers.append(m.layers[1]),                           # a length
    lambda m: m.config.update(depth=3),                               # a static value
    lambda m: m.config.update(extra=1),                               # a key
    lambda m: setattr(m, "note", "x"),                                # an attribute
    lambda m: setattr(m.layers[1], "b", m.layers[0].b),               # an alias
    lambda m: setattr(m.layers[1], "w", m.layers[0].w),               # an alias, other shape
    lambda m: setattr(Model, "scale", 3.0) or setattr(Model, "loss", Model.loss),
    lambda m: setattr(Layer, "__call__", lambda self, x: x @ self.w),  # a method's code
    lambda m: setattr(m.layers[0], "w", np.ones((3, 2))),             # a Param became an array
    lambda m: setattr(m, "layers", tuple(m.layers)),                  # a container kind
])
def test_any_change_of_the_key_is_not_recognized(change, monkeypatch):
    monkeypatch.setattr(Model, "scale", Model.scale)
    monkeypatch.setattr(Layer, "__call__", Layer.__call__)
    monkeypatch.setattr(Model, "loss", Model.loss)
    m = Model()
    x = np.ones((4, 3))
    guard, key = compiled(m.loss, (x,))
    change(m)
    walk = capture(m.loss, (x,), {})
    found = guard(m.loss, (x,), {})
    if walk.key != key:
        assert found is None
    else:  # a change the key does not see (a class attribute that is a number)
        assert agrees(guard, m.loss, (x,), {}, key)


W = np.ones(3)
S = 2


def uses_globals(x, k=S, *, scale=1.0):
    return x * W * k * scale + np.sum(x)


def test_globals_defaults_and_keywords():
    x = np.ones(3)
    guard, key = compiled(uses_globals, (x,), {"scale": 0.5})
    assert agrees(guard, uses_globals, (np.zeros(3),), {"scale": 0.5}, key)
    assert guard(uses_globals, (x,), {"scale": 0.25}) is None       # a static value
    assert guard(uses_globals, (x,), {}) is None                     # another keyword set
    assert guard(uses_globals, (x, 3), {"scale": 0.5}) is None       # another length
    saved = uses_globals.__defaults__
    try:
        uses_globals.__defaults__ = (3,)
        assert guard(uses_globals, (x,), {"scale": 0.5}) is None
    finally:
        uses_globals.__defaults__ = saved
    global W
    saved_w = W
    try:
        W = np.ones(3, np.float32)
        assert guard(uses_globals, (x,), {"scale": 0.5}) is None
        W = np.zeros(3)
        assert agrees(guard, uses_globals, (x,), {"scale": 0.5}, key)
    finally:
        W = saved_w


def test_a_name_that_appears_among_the_globals_is_seen():
    g = {"__name__": "guard_user_module", "np": np}
    exec("def f(x):\n    return np.sum(x * helper)\n", g)
    f = g["f"]
    x = np.ones(2)
    guard, key = compiled(f, (x,))
    g["helper"] = np.ones(2)   # was missing: the walk now feeds it
    assert guard(f, (x,), {}) is None
    del g["helper"]
    g["np"] = "not a module any more"
    assert guard(f, (x,), {}) is None


def test_closures_partials_and_namedtuples():
    w = kf.Param(np.ones(2))

    def make(c):
        def f(x, p):
            return c * x + p.a * w
        return f

    f = make(np.ones(2))
    g = functools.partial(f, p=Pair(np.ones(2), "b"))
    x = np.ones(2)
    guard, key = compiled(g, (x,))
    assert agrees(guard, g, (x,), {}, key)
    f.__closure__[0].cell_contents = np.ones(3)                      # the cell's array
    assert guard(g, (x,), {}) is None
    f.__closure__[0].cell_contents = np.zeros(2)
    assert agrees(guard, g, (x,), {}, key)
    g2 = functools.partial(f, p=Pair(np.ones(2), "c"))               # a static in a namedtuple
    assert guard(g2, (x,), {}) is None
    same_code = make(np.ones(2))   # another function of the same code: the same key
    assert agrees(guard, functools.partial(same_code, p=Pair(np.ones(2), "b")), (x,), {}, key)

    def make_other(c):
        def f(x, p):
            return c * x - p.a * w
        return f

    f.__code__ = make_other(None).__code__   # the code itself replaced
    assert guard(g, (x,), {}) is None


def test_walks_a_guard_does_not_mirror_get_none():
    x = np.ones(2)
    aliased = (x, x)
    f = lambda a, b: a + b  # noqa: E731
    assert compile_guard(f, aliased, {}, capture(f, aliased, {})) is None
    empty = _unbound_cell()
    assert compile_guard(empty, (), {}, capture(empty, (), {})) is None


def _unbound_cell():
    def f():
        return later  # noqa: F821 - bound after f is made, never here

    if False:
        later = 1  # noqa: F841
    return f


# ---- property: whatever changes, a guard answers as the walk does or not at all ----

SHAPES = [(), (2,), (3,), (2, 3)]
DTYPES = ["f8", "f4", "i8"]


def _leaf():
    return st.one_of(
        st.tuples(st.just("array"), st.sampled_from(SHAPES), st.sampled_from(DTYPES)),
        st.tuples(st.just("param"), st.sampled_from(SHAPES), st.sampled_from(DTYPES[:2])),
        st.tuples(st.just("static"), st.sampled_from([0, 1, 2.5, "a", None, True])),
        st.tuples(st.just("module")),
        st.tuples(st.just("libfn")))


def _tree():
    return st.recursive(_leaf(), lambda inner: st.one_of(
        st.tuples(st.just("list"), st.lists(inner, max_size=3)),
        st.tuples(st.just("tuple"), st.lists(inner, max_size=3)),
        st.tuples(st.just("dict"), st.dictionaries(st.sampled_from("abc"), inner, max_size=3)),
        st.tuples(st.just("obj"), st.dictionaries(st.sampled_from("xyz"), inner, max_size=3))),
        max_leaves=8)


class Holder:
    pass


def _make(d):
    kind = d[0]
    if kind == "array":
        return np.zeros(d[1], d[2])
    if kind == "param":
        return kf.Param(np.zeros(d[1], d[2]))
    if kind == "static":
        return d[1]
    if kind == "module":
        return np
    if kind == "libfn":
        return np.sum
    if kind == "list":
        return [_make(x) for x in d[1]]
    if kind == "tuple":
        return tuple(_make(x) for x in d[1])
    if kind == "dict":
        return {k: _make(v) for k, v in d[1].items()}
    obj = Holder()
    for k, v in d[1].items():
        setattr(obj, k, _make(v))
    return obj


def _paths(x, path=(), inside=()):
    """Every place below the roots: (path, value); a container inside itself (an alias
    can make a cycle) is not entered again."""
    yield path, x
    if id(x) in inside:
        return
    inside = inside + (id(x),)
    if isinstance(x, (list, tuple)):
        for k, v in enumerate(x):
            yield from _paths(v, path + (k,), inside)
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from _paths(v, path + (k,), inside)
    elif isinstance(x, Holder):
        for k, v in vars(x).items():
            yield from _paths(v, path + (k,), inside)


def _set(x, path, value):
    """x with the value at path replaced: containers in place, tuples rebuilt."""
    if not path:
        return value
    k, rest = path[0], path[1:]
    if isinstance(x, tuple):
        items = list(x)
        items[k] = _set(x[k], rest, value)
        return tuple(items)
    if isinstance(x, Holder):
        setattr(x, k, _set(getattr(x, k), rest, value))
        return x
    x[k] = _set(x[k], rest, value)
    return x


class Call:
    """A function reading a global G, a closure cell C and a default D, called on args."""

    def __init__(self, g, c, d, a):
        self.env = {"__name__": "guard_user_module", "G": _make(g)}
        exec("def make(C):\n    def f(*a, d=None):\n        return (G, C, a, d)\n"
             "    return f\n", self.env)
        self.f = self.env["make"](_make(c))
        self.f.__kwdefaults__ = {"d": _make(d)}
        self.args = tuple(_make(x) for x in a)

    def roots(self):
        return {"G": self.env["G"], "C": self.f.__closure__[0].cell_contents,
                "D": self.f.__kwdefaults__["d"], "A": self.args}

    def set_root(self, name, value):
        if name == "G":
            self.env["G"] = value
        elif name == "C":
            self.f.__closure__[0].cell_contents = value
        elif name == "D":
            self.f.__kwdefaults__ = {"d": value}
        else:
            self.args = value


@settings(max_examples=300, deadline=None)
@given(st.tuples(_tree(), _tree(), _tree(), st.lists(_tree(), max_size=3)),
       st.lists(st.tuples(st.integers(0, 10 ** 6), st.sampled_from(["fresh", "alias", "same"]),
                          _tree()), min_size=1, max_size=3))
def test_a_guard_answers_as_the_walk_or_not_at_all(desc, changes):
    call = Call(*desc)
    cap = capture(call.f, call.args, {})
    guard = compile_guard(call.f, call.args, {}, cap)
    if guard is None:
        return
    assert agrees(guard, call.f, call.args, {}, cap.key)
    for pick, how, tree in changes:
        places = [(root, path, v) for root, x in call.roots().items()
                  for path, v in _paths(x)]
        root, path, old = places[pick % len(places)]
        if how == "fresh":
            new = _make(tree)
        elif how == "alias":
            new = places[(pick // 7) % len(places)][2]
        else:  # the same kind of value, a new object: the key is unchanged
            new = _make(("array", old.shape, old.dtype.str[1:])) if type(old) is np.ndarray \
                else old
        try:
            call.set_root(root, _set(call.roots()[root], path, new))
        except (TypeError, KeyError):
            continue
        agrees(guard, call.f, call.args, {}, cap.key)


def test_kf_diff_feeds_a_rebound_global_param_through_its_guard():
    trace_cache.clear()
    x = np.array([1.0, 2.0])
    env = {"__name__": "guard_user_module", "kf": kf, "w": kf.Param(np.array([3.0, 4.0]))}
    exec("def loss(x):\n    return kf.sum(w * x * x)\n", env)
    loss = env["loss"]
    for _ in range(3):   # traced, cached (a guard made), recognized
        r = kf.diff(loss, x)
    assert trace_cache._guards, "the cached call made a guard"
    env["w"] = kf.Param(np.array([10.0, 20.0]))
    r = kf.diff(loss, x)
    assert kf.value(r) == 90.0
    np.testing.assert_array_equal(kf.grad(r, env["w"]), x * x)
    env["w"] = kf.Param(np.array([1.0, 1.0, 1.0]))   # another shape: traced again
    with pytest.raises(Exception, match="shape"):
        kf.diff(loss, x)


def test_verify_catches_a_guard_that_disagrees_with_the_walk():
    f = lambda x: kf.sum(x)  # noqa: E731
    x = np.ones(2)
    wrong = trace_cache.Replay(("not", "the", "key"), None, [x], [f])
    with pytest.raises(AssertionError, match="disagrees with the walk"):
        trace_cache._verify(f, (x,), {}, wrong)


def test_a_recognized_call_runs_the_plan_and_explains_its_failures():
    """A guard picks the plan's program for the shapes it checked; what it runs must
    equal a fresh trace, cast what needs casting, and name the op that fails."""
    trace_cache.clear()
    a = kf.Param(np.array([[2.0, 0.0], [0.0, 4.0]]))
    k = kf.Param(np.zeros(2))
    k.value = np.array([1, 2])   # an int array: traced as float64, cast at each call

    def loss(b):
        return kf.sum(kf.inv(a) @ b * k)

    b = np.array([1.0, 1.0])
    results = [kf.diff(loss, b) for _ in range(4)]     # traced, cached, recognized twice
    (_, entry), = trace_cache._guards[loss.__code__]
    assert not entry.direct   # k needs a cast: the plan's run_inputs makes it
    trace_cache.clear()
    fresh = kf.diff(loss, b)
    for r in results:
        assert kf.value(r) == kf.value(fresh)
        for p in (a, k):
            np.testing.assert_array_equal(kf.grad(r, p), kf.grad(fresh, p))
    def floats(b):
        return kf.sum(kf.inv(a) @ b)

    for _ in range(3):
        kf.diff(floats, b)
    (_, entry), = trace_cache._guards[floats.__code__]
    assert trace_cache.find(floats, (b,), {})[1].token in entry.direct
    a.value[...] = 0.0   # singular: the recognized call's program fails in inv
    with pytest.raises(kf.ExecutionError, match=r"inv failed on inputs of shapes"):
        kf.diff(floats, b)
    a.value[...] = np.eye(2)
    entry.plan = kf.compile(entry.plan.source, training=True)  # a plan put in its place
    assert not entry.direct   # programs of the old plan are never run
    np.testing.assert_array_equal(kf.grad(kf.diff(floats, b), a), -np.ones((2, 2)))

"""The trace cache never answers for other inputs (train/knet/trace_cache.py, graph/capture.py).

Everything a traced function reads is an input of the plan (arrays, Params) or
part of the key (shapes, dtypes, structure, static values); each test changes
one such thing between two calls and checks the second answer, and counts
traces where a call must hit the cache.
"""

import collections
import dataclasses
import warnings

import numpy as np
import pytest

import knetflow as kf
from knetflow.train.knet import trace_cache
from tests.train.knet.traced import counting

SCALE = np.full(3, 2.0)       # a global array the tests rebind
HELPER_SCALE = np.full(3, 3.0)


def _scaled(x):
    return x * HELPER_SCALE  # a helper reading a global: the traced function never names it


ONES = np.ones(3)


# ---- keyword arguments and default values ----


def test_keyword_arrays_are_fed_at_every_call():
    g = kf.grad(lambda x, c=None: kf.sum(x * c))
    np.testing.assert_array_equal(g(ONES, c=np.full(3, 1.0)), [1, 1, 1])
    np.testing.assert_array_equal(g(ONES, c=np.full(3, 5.0)), [5, 5, 5])
    w = kf.Param(np.ones(3))
    r = kf.diff(lambda *, scale: kf.sum(w * scale), scale=np.full(3, 4.0))
    np.testing.assert_array_equal(kf.grad(r, w), [4, 4, 4])
    r = kf.diff(lambda *, scale: kf.sum(w * scale), scale=np.full(3, 6.0))
    np.testing.assert_array_equal(kf.grad(r, w), [6, 6, 6])


def test_defaults_of_two_functions_made_by_one_factory():
    def make(k):
        def h(x, k=k):
            return kf.sum(x * k)
        return h

    np.testing.assert_array_equal(kf.grad(make(2.0))(ONES), [2, 2, 2])
    np.testing.assert_array_equal(kf.grad(make(7.0))(ONES), [7, 7, 7])
    np.testing.assert_array_equal(kf.grad(make(np.full(3, 3.0)))(ONES), [3, 3, 3])
    np.testing.assert_array_equal(kf.grad(make(np.full(3, 4.0)))(ONES), [4, 4, 4])

    def keyword_only(k):
        def h(x, *, k=k):
            return kf.sum(x * k)
        return h

    np.testing.assert_array_equal(kf.grad(keyword_only(np.full(3, 5.0)))(ONES), [5, 5, 5])
    np.testing.assert_array_equal(kf.grad(keyword_only(np.full(3, 9.0)))(ONES), [9, 9, 9])


# ---- what the function captures ----


def test_a_closure_array_rebound_between_calls():
    k = np.full(3, 2.0)

    def f(x):
        return kf.sum(x * k)

    np.testing.assert_array_equal(kf.grad(f)(ONES), [2, 2, 2])
    k = np.full(3, 8.0)  # noqa: F841 - read by f through its cell
    np.testing.assert_array_equal(kf.grad(f)(ONES), [8, 8, 8])


def test_a_global_array_reassigned():
    global SCALE
    g = kf.grad(lambda x: kf.sum(x * SCALE))
    try:
        np.testing.assert_array_equal(g(ONES), [2, 2, 2])
        SCALE = np.full(3, 5.0)
        np.testing.assert_array_equal(g(ONES), [5, 5, 5])
    finally:
        SCALE = np.full(3, 2.0)


def test_a_global_read_by_a_helper_function():
    global HELPER_SCALE
    g = kf.grad(lambda x: kf.sum(_scaled(x)))
    try:
        np.testing.assert_array_equal(g(ONES), [3, 3, 3])
        HELPER_SCALE = np.full(3, -1.0)
        np.testing.assert_array_equal(g(ONES), [-1, -1, -1])
    finally:
        HELPER_SCALE = np.full(3, 3.0)


def test_list_items_and_dict_values_replaced():
    ws = [np.full(3, 2.0)]
    table = {"k": np.full(3, 3.0)}
    f, calls = counting(lambda x: kf.sum(x * ws[0] * table["k"]))
    np.testing.assert_array_equal(kf.grad(f)(ONES), [6, 6, 6])
    ws[0] = np.full(3, 4.0)
    table["k"] = np.full(3, 0.5)
    np.testing.assert_array_equal(kf.grad(f)(ONES), [2, 2, 2])
    assert len(calls) == 1  # same structure and shapes: fed, not traced again


def test_a_method_of_two_instances_with_different_weights():
    class Scaler:
        def __init__(self, k):
            self.k = k

        def loss(self, x):
            return kf.sum(x * self.k)

        def __call__(self, x):
            return kf.sum(x * self.k * 2)

    a, b = Scaler(np.full(3, 1.0)), Scaler(np.full(3, 10.0))
    np.testing.assert_array_equal(kf.grad(a.loss)(ONES), [1, 1, 1])
    np.testing.assert_array_equal(kf.grad(b.loss)(ONES), [10, 10, 10])
    np.testing.assert_array_equal(kf.grad(a)(ONES), [2, 2, 2])
    np.testing.assert_array_equal(kf.grad(b)(ONES), [20, 20, 20])
    b.k = np.full(3, 100.0)  # an attribute rebound
    np.testing.assert_array_equal(kf.grad(b.loss)(ONES), [100, 100, 100])


def test_params_of_two_model_instances_are_their_own():
    class Model:
        def __init__(self, w):
            self.w = kf.Param(np.array(w))

        def __call__(self, x):
            return kf.sum(self.w * x)

    one, two = Model([1.0, 2.0]), Model([3.0, 4.0])
    x = np.array([1.0, 1.0])
    r1, r2 = kf.diff(one, x), kf.diff(two, x)
    assert (kf.value(r1), kf.value(r2)) == (3.0, 7.0)
    assert r2.params == [two.w] and kf.grad(r2, one.w) is None


# ---- static values ----


def test_a_static_python_value_changed_retraces():
    f, calls = counting(lambda x, n, flag: kf.sum(x[:n] * (3.0 if flag else 1.0)))
    x = np.ones(4)
    np.testing.assert_array_equal(kf.grad(f)(x, 2, False), [1, 1, 0, 0])
    np.testing.assert_array_equal(kf.grad(f)(x, 3, False), [1, 1, 1, 0])
    np.testing.assert_array_equal(kf.grad(f)(x, 3, True), [3, 3, 3, 0])
    np.testing.assert_array_equal(kf.grad(f)(x, 3, True), [3, 3, 3, 0])
    assert len(calls) == 3


def test_a_captured_python_number_is_static():
    k = 2.0
    f, calls = counting(lambda x: kf.sum(x * k))
    np.testing.assert_array_equal(kf.grad(f)(ONES), [2, 2, 2])
    k = 5.0  # noqa: F841
    np.testing.assert_array_equal(kf.grad(f)(ONES), [5, 5, 5])
    assert len(calls) == 2


def test_the_same_inputs_hit_the_cache():
    w = kf.Param(np.ones(3))
    f, calls = counting(lambda x, c: kf.sum(w * x * c))
    for k in range(5):
        r = kf.diff(f, np.full(3, float(k)), c=np.full(3, 2.0))
        np.testing.assert_array_equal(kf.grad(r, w), np.full(3, 2.0 * k))
    assert len(calls) == 1


def test_a_function_that_changes_what_it_captures_traces_once():
    log = []

    def f(x):
        log.append(x.shape)  # runs at each trace only; the list is part of the key
        return kf.sum(x * x)

    for _ in range(4):
        np.testing.assert_array_equal(kf.grad(f)(ONES), [2, 2, 2])
    assert len(log) == 1


def test_many_retraces_warn_saying_why(monkeypatch):
    monkeypatch.setattr(trace_cache, "_WARN_AFTER", 3)
    g = kf.grad(lambda x, k: kf.sum(x * k))
    with pytest.warns(RuntimeWarning, match=r"traced .* 3 times.*static value.*np\.asarray"):
        for k in range(4):
            g(ONES, float(k))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for k in range(4):  # fed as an array: one trace
            g(ONES, np.asarray(float(k)))


# ---- kf.diff with Params, and the iterators ----


def test_diff_with_params_in_a_rebound_list():
    ws = [kf.Param(np.ones(2))]
    f, calls = counting(lambda: kf.sum(ws[0] * ws[0]))
    assert kf.value(kf.diff(f)) == 2.0
    ws[0] = kf.Param(np.full(2, 3.0))
    r = kf.diff(f)
    assert kf.value(r) == 18.0 and r.params == [ws[0]]
    np.testing.assert_array_equal(kf.grad(r, ws[0]), [6, 6])
    assert len(calls) == 1


def test_minimize_and_sgd_see_each_batch_and_rebound_captures():
    w = kf.Param(np.zeros(2))
    target = np.array([1.0, -1.0])
    data = [(np.full(2, 1.0),), (np.full(2, 2.0),)]
    losses = list(kf.sgd(lambda x: kf.sum((w * x - target) ** 2), data, lr=0.1))
    after_one = 0.1 * 2 * target  # w - lr * 2 (w x - target) x at w = 0, x = 1
    assert losses == [2.0, pytest.approx(np.sum((after_one * 2.0 - target) ** 2))]
    center = np.zeros(2)
    v = kf.Param(np.zeros(2))

    def pull():
        return kf.sum((v - center) ** 2)

    list(kf.minimize(pull, [()] * 30, kf.optim.SGD(lr=0.25)))
    np.testing.assert_allclose(v.value, [0, 0])
    center = np.array([3.0, 3.0])  # noqa: F841 - read by pull
    list(kf.minimize(pull, [()] * 30, kf.optim.SGD(lr=0.25)))
    np.testing.assert_allclose(v.value, [3, 3])


# ---- arguments come back as they went in ----


def test_arguments_are_left_as_they_were():
    z = np.array(2.0)
    assert kf.grad(lambda z: z * z)(z) == 4.0
    assert z.flags.writeable and z.shape == ()
    labels = np.array([0, 2, 1])
    x = np.arange(6.0).reshape(3, 2)
    before = x.copy()
    kf.grad(lambda x, y: kf.sum(x.reshape(2, 3) * y))(x, labels.astype(float))
    assert x.shape == (3, 2) and x.flags.writeable and (x == before).all()
    kf.diff(lambda p, i: kf.sum(p * i), kf.Param(np.ones(3)), labels)
    assert labels.dtype == np.int64 and labels.flags.writeable
    a, b = np.ones(3), np.full(3, 2.0)
    g = kf.grad(lambda a, b: kf.sum(a * b))(a, b)
    assert not np.shares_memory(g, b) and not np.shares_memory(g, a)


def test_any_parameter_names():
    np.testing.assert_array_equal(kf.grad(lambda f: kf.sum(f * f))(ONES), [2, 2, 2])
    w = kf.Param(np.ones(3))
    r = kf.diff(lambda x, f, argnum: kf.sum(w * x * f * argnum), ONES, f=np.full(3, 2.0),
                argnum=np.full(3, 3.0))
    np.testing.assert_array_equal(kf.grad(r, w), [6, 6, 6])
    g, loss = kf.gradloss(lambda f, param: kf.sum(f * param))(ONES, param=np.full(3, 4.0))
    np.testing.assert_array_equal(g, [4, 4, 4])
    assert loss == 12.0


# ---- NumPy work on captured arrays is traced, not computed once ----


def test_numpy_on_a_rebound_closure_array_is_traced():
    w = kf.Param(np.ones(3))

    def loss(w, x):
        return kf.sum(w * ((x - x.mean()) / 2))  # NumPy on x, then an op with w

    f, calls = counting(lambda: loss(w, x))
    for x in [np.arange(3.0), np.arange(3.0) * 10]:  # the Knet idiom: a new batch each step
        np.testing.assert_allclose(kf.grad(kf.diff(f), w), (x - x.mean()) / 2)
    assert len(calls) == 1


def test_numpy_on_globals_and_attributes_changed_in_place():
    global SCALE
    g = kf.grad(lambda x: kf.sum(x * (SCALE * 2)))
    try:
        np.testing.assert_array_equal(g(ONES), [4, 4, 4])
        SCALE[:] = 5.0
        np.testing.assert_array_equal(g(ONES), [10, 10, 10])
    finally:
        SCALE = np.full(3, 2.0)

    class Scaler:
        def __init__(self):
            self.k = np.ones(3)

        def loss(self, x):
            return kf.sum(x * (self.k * 2))

    s = Scaler()
    np.testing.assert_array_equal(kf.grad(s.loss)(ONES), [2, 2, 2])
    s.k[:] = 7.0
    np.testing.assert_array_equal(kf.grad(s.loss)(ONES), [14, 14, 14])
    assert type(s.k) is np.ndarray  # the array is back where it was


def test_an_attribute_the_function_sets_is_carried_out():
    class Running:
        def __init__(self):
            self.total = np.zeros(2)

        def loss(self, x):
            self.total = self.total + x  # a plain attribute, not a state attribute
            return kf.sum(self.total * x)

    r = Running()
    for k in range(3):
        # d/dx sum((total + x) x) = total + 2x
        np.testing.assert_array_equal(kf.grad(r.loss)(np.ones(2)), np.full(2, k + 2.0))
        assert type(r.total) is np.ndarray
        np.testing.assert_array_equal(r.total, np.full(2, k + 1.0))


class _Scaled:
    scale = 2.0
    shift = np.zeros(3)

    def loss(self, x):
        return kf.sum(x * self.scale + self.shift)


class _Child(_Scaled):
    pass


@pytest.mark.parametrize("cls", [_Scaled, _Child])
def test_a_class_attribute_read_through_self_is_keyed_or_fed(cls, monkeypatch):
    """A number on the class (or a base class) is static, an array on it is fed: a
    changed value must never get the answer cached for the old one."""
    monkeypatch.setattr(_Scaled, "scale", 2.0)
    monkeypatch.setattr(_Scaled, "shift", np.zeros(3))
    m, x = cls(), np.ones(3)
    assert [kf.diff(m.loss, x).value for _ in range(3)] == [6.0] * 3   # cached, recognized
    _Scaled.scale = 3.0
    assert kf.diff(m.loss, x).value == 9.0
    _Scaled.shift = np.ones(3)
    assert kf.diff(m.loss, x).value == 12.0
    _Scaled.shift[...] = 2.0
    assert kf.diff(m.loss, x).value == 15.0


# ---- containers of other kinds and slotted objects ----


class _Slotted:
    __slots__ = ("w", "scale", "__private")

    def __init__(self, w, scale):
        self.w, self.scale, self.__private = w, scale, 1.0

    def loss(self):
        return kf.sum(self.w * self.w) * self.scale * self.__private


@dataclasses.dataclass(slots=True)
class _SlottedData:
    w: object
    scale: float


class _Items(list):
    pass


def _holders():
    """(name, make(w, scale) -> (function, set_scale, set_w)) for each container kind
    the walk reads: values in them changed between calls must be seen."""
    def slotted(w, s):
        m = _Slotted(w, s)
        return m.loss, lambda v: setattr(m, "scale", v), lambda p: setattr(m, "w", p)

    def data(w, s):
        m = _SlottedData(w, s)
        return (lambda: kf.sum(m.w * m.w) * m.scale,
                lambda v: setattr(m, "scale", v), lambda p: setattr(m, "w", p))

    def keyed(kind):
        def make(w, s):
            d = kind()
            d["w"], d["s"] = w, s
            return (lambda: kf.sum(d["w"] * d["w"]) * d["s"],
                    lambda v: d.__setitem__("s", v), lambda p: d.__setitem__("w", p))
        return make

    def indexed(kind):
        def make(w, s):
            items = kind([w, s])
            return (lambda: kf.sum(items[0] * items[0]) * items[1],
                    lambda v: items.__setitem__(1, v), lambda p: items.__setitem__(0, p))
        return make

    def a_set(w, s):
        held = {s}
        box = [w]  # a set holds no arrays; the weight beside it
        def change(v):
            held.clear()
            held.add(v)
        return (lambda: kf.sum(box[0] * box[0]) * sum(held), change,
                lambda p: box.__setitem__(0, p))

    return [("__slots__", slotted), ("dataclass(slots=True)", data),
            ("OrderedDict", keyed(collections.OrderedDict)),
            ("defaultdict", keyed(lambda: collections.defaultdict(float))),
            ("a list subclass", indexed(_Items)), ("deque", indexed(collections.deque)),
            ("set", a_set)]


@pytest.mark.parametrize("name, make", _holders(), ids=[n for n, _ in _holders()])
def test_values_in_slots_and_other_containers_are_keyed_or_fed(name, make):
    # these were keyed by identity: a changed number or a rebound Param got the answer
    # cached for the old one
    w = kf.Param(np.array([1.0, 2.0]))
    f, set_scale, set_w = make(w, 2.0)
    assert [kf.diff(f).value for _ in range(3)] == [10.0] * 3   # cached, recognized
    set_scale(3.0)
    assert kf.diff(f).value == 15.0
    new = kf.Param(np.array([10.0, 20.0]))
    set_w(new)
    r = kf.diff(f)
    assert r.value == 1500.0
    np.testing.assert_array_equal(kf.grad(r, new), [60.0, 120.0])
    assert kf.grad(r, w) is None


def test_numpy_work_on_an_array_in_a_slot_is_traced():
    class Holder:
        __slots__ = ("x",)

    h, w = Holder(), kf.Param(np.array([1.0, 2.0]))
    h.x = np.array([1.0, 2.0])

    def f():
        return kf.sum(w * (h.x - h.x.mean()))

    assert kf.diff(f).value == kf.diff(f).value == 0.5
    assert type(h.x) is np.ndarray                       # given back after the trace
    h.x = np.array([3.0, 9.0])
    assert kf.diff(f).value == 3.0    # 1*(-3) + 2*3; with the mean of [1, 2] baked in: 16.5
    h.x[...] = [0.0, 4.0]
    assert kf.diff(f).value == 2.0

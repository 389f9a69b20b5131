"""Plans: `kf.compile(...)` and running a compiled graph many times.

A Plan holds the graph (after optimization passes), the parameter values, and
one generated Program per input signature (the shapes fed), built on first
use and cached. `run(feed)` costs one dict walk over the feed and one call of
the generated function.
"""

from __future__ import annotations

import sys
import threading
import traceback

import numpy as np

from knetflow import initializers, rng
import knetflow.devices as devmod
from knetflow.devices import transfers
from knetflow.devices.base import is_device_array
from knetflow.errors import ExecutionError, FeedError
from knetflow.graph.node import Graph
from knetflow.graph.passes import optimize
from knetflow.graph.specialize import specialize
from knetflow.ops.base import Spec, fmt
from knetflow.ops.fused import StepError
from knetflow.scheduler.codegen import generate
from knetflow.scheduler.executor import MultiProgram
from knetflow.scheduler.reports import Placement, Profile


def compile(outputs_or_graph, devices=None, placement="auto", training=False,
            check_numerics=False, optimize_graph=True, strict=False) -> "Plan":
    """Compile outputs (Symbols) or a Graph into a Plan that runs them.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> x = kf.placeholder("x", (None, 2))
        >>> plan = kf.compile(kf.relu(x) * 2)
        >>> plan.run({"x": np.array([[-1., 3.]], dtype="float32")})[0]
        array([[0., 6.]], dtype=float32)

    `devices` is a device or a list of them (default: cpu:0); with several, the
    graph is placed (`placement`: "auto", a dict of name patterns to devices, or
    a callable), partitioned and run by one executor per device. `strict`
    refuses any placement a rule asked for but the plan cannot honour.
    """
    graph = outputs_or_graph if isinstance(outputs_or_graph, Graph) else Graph(outputs_or_graph)
    graph.verify()
    return Plan(graph, devices=devices, training=training, check_numerics=check_numerics,
                optimize_graph=optimize_graph, placement=placement, strict=strict)


class Plan:
    """A compiled graph; see `compile`.

    `adapt`, for DataParallelPlan: a function applied to the graph specialized
    to each input signature before it is compiled; it returns a graph with
    the same inputs, params and updates.
    """

    def __init__(self, graph, devices=None, training=False, check_numerics=False,
                 optimize_graph=True, placement="auto", strict=False, adapt=None):
        self.source = graph
        # no fusion under check_numerics, so a NaN is blamed on the op that made it, not `fused`
        self.graph = (optimize(graph, training=training, fuse=not check_numerics)
                      if optimize_graph else graph)
        self._optimize_graph = optimize_graph
        self._adapt = adapt
        listed = devices if isinstance(devices, (list, tuple)) else [devices or "cpu:0"]
        self.devices = [devmod.device(d) for d in listed]
        self.device = self.devices[0]
        self.xp = self.device.xp
        self.placement_rule, self.strict = placement, strict
        self.training = training
        self.check_numerics = check_numerics
        self._seed = rng.spawn()
        self.rng = self.rng_for(self.device)
        self.input_names = [n.attrs["name"] for n in self.graph.inputs]
        self._input_nodes = self.graph.inputs
        # dtype objects compare with an array's dtype faster than their names do
        self._input_dtypes = [np.dtype(n.spec.dtype) for n in self._input_nodes]
        self.param_names = [n.attrs["name"] for n in self.graph.params]
        self._param_index = {name: k for k, name in enumerate(self.param_names)}
        self._values = [self._initial(n) for n in self.graph.params]
        self._n_outputs = len(self.graph.outputs)
        self._updates = [self._param_index[name] for name in self.graph.updates]
        self._programs: dict = {}
        self._last = None
        # one run at a time: a program's buffers and channels serve one run (two threads
        # running one plan read each other's values, and a multi-device run could hang)
        self._run_lock = threading.Lock()
        # fixed for the plan's life: where run_inputs puts feeds and finds outputs
        self._host = self.xp is np and len(self.devices) == 1
        self._puts_own = self.xp is np or len(self.devices) > 1
        self._profile = None  # the latest profile(feed)'s report

    def _adapted(self, graph):
        """`adapt(graph)`, checked to keep the graph's inputs, params and updates."""
        new = self._adapt(graph)
        names = [[n.attrs["name"] for n in g.inputs] + [n.attrs["name"] for n in g.params]
                 + list(g.updates) for g in (new, graph)]
        if names[0] != names[1]:
            raise ValueError(f"adapt must keep the graph's inputs, params and updates "
                             f"{names[1]}, got {names[0]}")
        return new

    def rng_for(self, device):
        """The random generator random ops use on `device` (its draws land there)."""
        return device.rng(self._seed.spawn(1)[0] if device is not self.device else self._seed)

    # -- parameters --
    def _initial(self, node):
        value = node.attrs.get("value")
        if value is None:
            value = initializers.initial_value(node.attrs.get("init"), node.spec.shape,
                                               node.spec.dtype)
        return self.device.put(np.array(value, dtype=node.spec.dtype))

    @property
    def params(self) -> dict:
        """Current parameter values by name (the arrays the plan uses)."""
        return dict(zip(self.param_names, self._values))

    def set_params(self, values: dict) -> None:
        """Replace parameter values by name (shapes and dtypes must match)."""
        for name, value in values.items():
            k = self._index_of_param(name)
            old = self._values[k]
            value = self._home_of(old).put(np.asarray(value, dtype=old.dtype))
            if value.shape != old.shape:
                raise FeedError(f"param {name!r} has shape {old.shape}, got {value.shape}")
            self._values[k] = value

    def _home_of(self, array):
        """The device holding `array` (a param's home); host arrays: the first device."""
        return transfers.device_of(array) or self.device

    def _index_of_param(self, name):
        try:
            return self._param_index[name]
        except KeyError:
            raise FeedError(f"plan has no param {name!r}; params: {self.param_names}") from None

    # -- running --
    def run(self, feed=None, keep_on_device=False) -> tuple:
        """Run the plan on `feed` (input name -> array); returns the outputs as arrays.

        A feed entry naming a parameter overrides its value for this run only.
        """
        feed = feed or {}
        try:
            arrays = [feed[name] for name in self.input_names]
        except KeyError:
            missing = [n for n in self.input_names if n not in feed]
            raise FeedError(f"feed is missing input(s) {missing}; the graph's inputs are "
                            f"{self.input_names}") from None
        params = self._values
        if len(feed) != len(arrays):
            params = self._overrides(feed)
        return self.run_inputs(arrays, keep_on_device, params)

    def run_inputs(self, arrays, keep_on_device=False, params=None) -> tuple:
        """`run` with the inputs given as a list in the order of `input_names` (the
        callers that run one plan many times: kf.diff's cache builds this list directly)."""
        if len(arrays) != len(self._input_dtypes):
            raise FeedError(f"run_inputs got {len(arrays)} input(s); the graph's inputs are "
                            f"{self.input_names}")
        arrays = [a if type(a) is np.ndarray and a.dtype == dtype else _as_input(a, dtype)
                  for a, dtype in zip(arrays, self._input_dtypes)]
        with self._run_lock:
            if params is None:
                params = self._values
            key = tuple([a.shape for a in arrays])
            program = self._programs.get(key)
            if program is None:
                program = self._program(key)
            self._last = program
            try:
                if self._puts_own:  # the host, or each executor puts its own feeds
                    outs = program.fn(arrays, params)
                else:  # on a GPU: its device and stream current; feeds go to the device
                    with self.device.activate():
                        outs = program.fn([self.device.put(a) for a in arrays], params)
            except Exception as e:  # noqa: BLE001 - re-raised with the node that failed
                raise self._explain(e, program) from e
            if self._updates:
                for k, value in zip(self._updates, outs[self._n_outputs:]):
                    self._values[k] = value
                outs = outs[:self._n_outputs]
        if keep_on_device or self._host:
            return outs
        return tuple(o if type(o) is np.ndarray else transfers.to_host(o) for o in outs)

    def direct_program(self, arrays):
        """The program `run_inputs(arrays)` runs, when it would run it on `arrays` as they
        are: a one-device host plan with nothing to write back, each input a host array
        of its input's dtype; else None. A caller that checks the same shapes and dtypes
        at each call (kf.diff's capture guards) can then `run_program` it directly."""
        if (not self._host or self._updates or len(arrays) != len(self._input_dtypes)
                or not all(type(a) is np.ndarray and a.dtype == d
                           for a, d in zip(arrays, self._input_dtypes))):
            return None
        key = tuple([a.shape for a in arrays])
        program = self._programs.get(key)
        return program if program is not None else self._program(key)

    def run_program(self, program, arrays) -> tuple:
        """Run a program `direct_program` gave on inputs of its shapes and dtypes."""
        self._run_lock.acquire()  # not `with`: half its cost on this hot path
        try:
            self._last = program
            return program.fn(arrays, self._values)
        except Exception as e:  # noqa: BLE001 - re-raised with the node that failed
            raise self._explain(e, program) from e
        finally:
            self._run_lock.release()

    def __call__(self, feed=None, **kw):
        return self.run(feed, **kw)

    def _overrides(self, feed):
        params = list(self._values)
        for name, value in feed.items():
            if name in self.input_names:
                continue
            if name not in self._param_index:
                raise FeedError(f"{name!r} is neither an input nor a param of the plan; inputs: "
                                f"{self.input_names}, params: {self.param_names}")
            k = self._param_index[name]
            old = self._values[k]
            params[k] = self._home_of(old).put(np.asarray(value, dtype=old.dtype))
            if params[k].shape != self._values[k].shape:
                raise FeedError(f"param {name!r} has shape {self._values[k].shape}, "
                                f"got {params[k].shape}")
        return params

    def _program(self, key):
        specs = {n.attrs["name"]: Spec(shape, n.spec.dtype)
                 for n, shape in zip(self._input_nodes, key)}
        graph = specialize(self.graph, specs)
        if (graph is not self.graph and self._optimize_graph and self._adapt is None
                and len(self.devices) == 1):
            # dims became known: optimize again from the source, so that what depends on
            # shapes alone (a mean's count, the broadcast of its gradient) folds too;
            # kept only with the same inputs, params and updates, which runs index
            again = optimize(specialize(self.source, specs), training=self.training,
                             fuse=not self.check_numerics)
            if _interface(again) == _interface(graph):
                graph = again
        if self._adapt is not None:
            graph = self._adapted(graph)
        if len(self.devices) > 1:
            from knetflow.scheduler.multidevice import build

            program = build(self, graph)
        else:
            with self.device.activate():  # a GPU's buffers and constants go on it
                program = generate(graph, self.xp, rng=self.rng,
                                   check_numerics=self.check_numerics)
        self._programs[key] = program
        return program

    def _explain(self, error, program, device_name=None):
        """The exception re-raised naming the op, its shapes and the user's line."""
        if isinstance(error, ExecutionError):
            return error
        node = None
        for frame, lineno in traceback.walk_tb(sys.exc_info()[2]):
            if frame.f_code.co_filename == program.filename:
                node = program.lines.get(lineno)
        if node is None:
            return ExecutionError(f"plan failed on {device_name or self.device.name}: "
                                  f"{type(error).__name__}: {error}")
        opname, specs, where = node.op, [i.spec for i in node.inputs], node.where
        if isinstance(error, StepError):  # name the step of a fused chain, not `fused`
            opname, refs = node.attrs["program"][error.step]
            specs = [node.spec if r < 0 else node.inputs[r].spec for r in refs]
            where, error = node.attrs["wheres"][error.step], error.__cause__
        shapes = ", ".join(fmt(s) for s in specs)
        return ExecutionError(f"{opname} failed on inputs of shapes {shapes} on "
                              f"{device_name or self.device.name}: {type(error).__name__}: "
                              f"{error} "
                              f"(node built at {where})")

    # -- reports --
    def memory_report(self, feed_shapes=None) -> dict:
        """Peak bytes of intermediate values per device, for the last (or given) signature."""
        program = self._report_program(feed_shapes)
        memory = program.memory
        if isinstance(memory, dict):  # one per device
            return {d: m.peak_bytes for d, m in memory.items()}
        return {self.device.name: memory.peak_bytes}

    def explain(self, feed_shapes=None) -> str:
        """Where each op runs: per device its ops, transfers with bytes, and peak memory."""
        from knetflow.scheduler.multidevice import describe

        return describe(self, self._report_program(feed_shapes))

    def _report_program(self, feed_shapes, what="a report"):
        if feed_shapes is not None:
            key = tuple(tuple(feed_shapes[n]) for n in self.input_names)
            return self._programs.get(key) or self._program(key)
        if self._last is None:
            if all(n.spec.is_static for n in self._input_nodes):
                return self._program(tuple(n.spec.shape for n in self._input_nodes))
            raise ValueError(f"run the plan once, or pass feed_shapes, to get {what}")
        return self._last

    @property
    def placement(self) -> Placement:
        """Which device each node runs on, for the shapes of the last run: a read-only
        mapping from node label to device name (see `Placement`; print it for a table).

        A plan whose inputs have static shapes needs no run; otherwise the placement
        depends on the shapes fed (`placement="auto"` weighs their costs), so run the
        plan once first, or use `placement_for(feed_shapes)`.

        Example:
            >>> import knetflow as kf, numpy as np
            >>> _ = kf.set_cpu_devices(2)
            >>> x = kf.placeholder("x", (None, 2))
            >>> w = kf.param("w", value=np.ones(2))
            >>> plan = kf.compile([x * w], devices=["cpu:0", "cpu:1"], placement={"w": "cpu:1"})
            >>> _ = plan.run({"x": np.ones((3, 2))})
            >>> plan.placement["w"], list(plan.placement.by_device())
            ('cpu:1', ['cpu:1'])
            >>> _ = kf.set_cpu_devices(1)
        """
        return self._placement(self._report_program(
            None, what="plan.placement (or call plan.placement_for(feed_shapes))"))

    def placement_for(self, feed_shapes: dict) -> Placement:
        """`placement` for inputs of the given shapes ({input name: shape})."""
        return self._placement(self._report_program(feed_shapes))

    def _placement(self, program) -> Placement:
        where = getattr(program, "placement", None)  # set on multi-device programs
        if where is None:
            where = dict.fromkeys((n.id for n in program.graph.nodes), self.device.name)
        return Placement(program.graph, where)

    def profile(self, feed=None, runs=10) -> Profile:
        """Time per op and per device, the mean over `runs` profile runs of `feed`.

        With `feed`: compiles an instrumented copy of the program for feed's shapes
        (the same placement, devices and kernels as `run`; on a GPU each op is
        timed to its end), runs it once to warm up and then `runs` times, keeps
        the report and returns it.
        Profile runs leave the plan as it was: params are read, never updated.
        Without `feed`: the report of the latest `profile(feed)` call, or a
        ValueError saying there was none.

        Ordinary `run` calls are never timed: timing costs two clock reads per op,
        and a run of a small plan takes microseconds, so `run` stays as fast as it
        is and only profile runs are measured.

        Example:
            >>> import knetflow as kf, numpy as np
            >>> x = kf.placeholder("x", (None, 2))
            >>> plan = kf.compile([kf.sum(kf.exp(x))])
            >>> report = plan.profile({"x": np.ones((4, 2))}, runs=3)
            >>> sorted(report.by_op()), list(report.by_device()), report.runs
            (['exp', 'sum'], ['cpu:0'], 3)
            >>> plan.profile() is report
            True
        """
        if feed is None:
            if self._profile is None:
                raise ValueError(
                    "this plan has no profile yet: plan.profile(feed, runs=10) times runs "
                    "of feed op by op and keeps the report for plan.profile(); ordinary "
                    "plan.run calls are not timed")
            return self._profile
        if runs < 1:
            raise ValueError(f"runs={runs}: a profile needs at least one run")
        arrays = self._feed_arrays(feed)
        params = self._values if len(feed) == len(arrays) else self._overrides(feed)
        key = tuple(a.shape for a in arrays)
        program, timers = self._instrumented(self._programs.get(key) or self._program(key))
        try:
            for k in range(runs + 1):
                if len(self.devices) > 1:  # each executor puts its own feeds
                    program.fn(arrays, params)
                else:
                    with self.device.activate():
                        program.fn([self.device.put(a) for a in arrays], params)
                if k == 0:  # a warm-up run (a GPU compiles its kernels then): not counted
                    for _, times, _ in timers:
                        times[:] = [0.0] * len(times)
        except Exception as e:  # noqa: BLE001 - re-raised with the node that failed
            raise self._explain(e, program) from e
        finally:
            if hasattr(program, "close"):
                program.close()
        rows = [(n, t / runs, d) for nodes, times, d in timers for n, t in zip(nodes, times)]
        self._profile = Profile(rows, runs, dict(zip(self.input_names, key)))
        return self._profile

    def _feed_arrays(self, feed) -> list:
        """The inputs of `feed` in order, as arrays of their dtypes (as `run` takes them)."""
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise FeedError(f"feed is missing input(s) {missing}; the graph's inputs are "
                            f"{self.input_names}")
        return [_as_input(feed[n.attrs["name"]], n.spec.dtype) for n in self._input_nodes]

    def _instrumented(self, program):
        """A timed copy of `program` and its timers: [(nodes, seconds per node, device)].

        The nodes are those `placement` names: a node that a multi-device partition
        rebuilt (to read a recv) is reported as the node it stands for."""
        if not hasattr(program, "programs"):  # one device
            return self._timed(program, self.device, self.rng, {})
        timed, timers = {}, []
        for d, prog in program.programs.items():
            device = program.devices[d]
            timed[d], timer = self._timed(prog, device, self.rng_for(device),
                                          program.partition.origin)
            timers += timer
        return MultiProgram(program.partition, timed, program.devices, self.input_names,
                            self.param_names, self._explain), timers

    def _timed(self, program, device, rng, origin):
        times = [0.0] * len(program.graph.nodes)
        sync = None if device.kind == "cpu" else device.synchronize
        with device.activate():  # a GPU's buffers and constants go on it
            timed = generate(program.graph, device.xp, rng=rng,
                             check_numerics=self.check_numerics, profile=times, sync=sync)
        nodes = [origin.get(n.id, n) for n in program.graph.nodes]
        return timed, [(nodes, times, device.name)]

    def __repr__(self) -> str:
        return (f"<Plan {len(self.graph.nodes)} nodes on {self.device.name}, "
                f"inputs {self.input_names}, {len(self.param_names)} params>")


def _as_input(a, dtype):
    """A fed value as an array of `dtype`: device arrays stay where they are; any other
    DLPack-capable array (a PyTorch tensor, a JAX array) is taken without a copy."""
    if is_device_array(a):
        return a if a.dtype == dtype else a.astype(dtype)
    if type(a) is not np.ndarray and hasattr(a, "__dlpack__"):
        a = from_dlpack(a)
        if is_device_array(a):
            return a if a.dtype == dtype else a.astype(dtype)
    return np.asarray(a, dtype=dtype)


#: DLPack's device types knetflow takes (DLDeviceType: 1 CPU, 2 CUDA, 3 pinned CPU memory)
_DLPACK_CPU, _DLPACK_CUDA, _DLPACK_CUDA_HOST = 1, 2, 3


def from_dlpack(obj):
    """A DLPack-capable array as knetflow's array on the same device, sharing its memory:
    a NumPy array for host memory, the GPU's (CuPy) array for CUDA memory.

    Example:
        >>> import numpy as np
        >>> a = np.arange(3.0)
        >>> np.shares_memory(from_dlpack(a), a)
        True
    """
    kind, index = obj.__dlpack_device__()
    if kind in (_DLPACK_CPU, _DLPACK_CUDA_HOST):
        return np.from_dlpack(obj)
    if kind == _DLPACK_CUDA:
        try:
            device = devmod.device(f"gpu:{int(index)}")
        except Exception as e:  # noqa: BLE001 - re-raised saying what was fed
            raise FeedError(f"a CUDA array (DLPack device {int(index)}) was fed, but knetflow "
                            f"cannot use gpu:{int(index)}: {e}") from None
        return device.from_dlpack(obj)
    raise FeedError(f"a {type(obj).__name__} on DLPack device type {kind} was fed; knetflow "
                    f"takes host (CPU) and CUDA arrays")


def _interface(graph) -> tuple:
    """What a program's callers index by position: input, param and update names."""
    return ([n.attrs["name"] for n in graph.inputs], [n.attrs["name"] for n in graph.params],
            list(graph.updates))

"""The public namespaces keep every name they had before train/ was split into front ends.

kf, kf.sym, kf.optim, kf.init, kf.metric, kf.callback and kf.distributed are what users
write; modules behind them may move (issue 13, item 6), these names may not. New names may
join; a name leaving one of these lists is a breaking change to make on purpose."""

import importlib

import pytest

import knetflow as kf

#: each namespace's public names before the split (modules and private helpers left out)
PUBLIC = {
    "kf": {
        "BNMoments", "DiffResult", "ExecutionError", "FeedError", "FeedForward", "FormatError",
        "Graph", "Node", "NumericsError", "Op", "Param", "Plan", "REGISTRY", "RNN", "ShapeError",
        "Spec", "StateAttribute", "Symbol", "TracingError", "abs", "abs2", "accuracy", "acos",
        "acosh", "adadelta", "adagrad", "adam", "add", "apply", "asin", "asinh", "atan", "atanh",
        "backward", "batchnorm", "batchnorm_train", "bce", "bmm", "bnmoments", "bnparams",
        "bnupdates", "broadcast_like", "callback", "cast", "cat", "cat1d", "cbrt", "ceil",
        "compile", "concat", "const", "conv4", "conv4_data", "conv4_filter", "converge", "cos",
        "cosh", "count", "cpu", "cumsum", "datasets", "deconv4", "det", "device", "devices",
        "diag", "diff", "digamma", "div", "dropout", "elu", "embedding", "eq", "erf", "erfc",
        "erfcinv", "erfcx", "erfinv", "exp", "exp10", "exp2", "expand_dims", "expm1",
        "export_onnx", "floor", "gamma", "ge", "get_op", "getitem", "goldensection", "gpu",
        "grad", "gradcheck", "gradloss", "gt", "hcat", "hyperband", "import_onnx", "index_add",
        "init", "inv", "invx", "le", "lgamma", "load", "load_checkpoint", "load_model", "log",
        "log10", "log1p", "log2", "loggamma", "logistic", "logp", "logsoftmax", "logsumexp", "lt",
        "mat", "matmul", "max", "maximum", "mean", "metric", "min", "minibatch", "minimize",
        "minimum", "momentum", "mul", "ne", "neg", "nesterov", "nll", "optim", "outer", "param",
        "params", "permutedims", "placeholder", "polygamma", "pool", "pool_grad", "pool_select",
        "pow", "prod", "progress", "register", "relu", "repeat", "reshape", "reshape_like",
        "rmsprop", "rnn_scan", "rnnparam", "rnnparams", "roll", "round", "save",
        "save_checkpoint", "seed", "selu", "serialize", "set_cpu_devices", "set_sim_devices",
        "sgd", "sigm", "sign", "sin", "sinh", "slogdet", "softmax", "solve", "split", "sqrt",
        "square", "squeeze", "stack", "std", "sub", "sum", "sum_to", "sym", "tan", "tanh",
        "tensordot", "trace", "transpose", "trigamma", "tril", "triu", "trunc", "unpool",
        "update", "value", "var", "vcat", "where", "zeros_like"
    },
    "sym": {
        "Activation", "BatchNorm", "Convolution", "Deconvolution", "Dropout", "Embedding",
        "Flatten", "FullyConnected", "LinearRegressionOutput", "Pooling", "RNN", "Reshape",
        "SoftmaxOutput", "Symbol", "Variable", "load_json", "reset_names"
    },
    "optim": {
        "Adadelta", "Adagrad", "Adam", "Momentum", "MultiOptimizer", "Nesterov", "OPTIMIZERS",
        "Optimizer", "Rmsprop", "SGD", "apply_updates", "clip_norm", "clip_value", "create",
        "norm_scales", "optimizer_from_state", "resolve", "state_from_plan", "step_graph"
    },
    "init": {
        "Constant", "Initializer", "Load", "Mixed", "Normal", "One", "Orthogonal", "Uniform",
        "Xavier", "Zero", "bilinear", "create", "gaussian", "initial_value", "ones", "xavier",
        "xavier_normal", "xavier_uniform", "zeros"
    },
    "metric": {
        "Accuracy", "CompositeEvalMetric", "CrossEntropy", "CustomMetric", "EvalMetric", "F1",
        "MAE", "MSE", "RMSE", "TopKAccuracy", "check_label_shapes", "create", "np_metric",
        "to_host"
    },
    "callback": {
        "BatchEndParam", "LOGGER", "ProgressBar", "Speedometer", "do_checkpoint", "format_speed",
        "format_time", "log_metrics", "log_train_metric", "namedtuple", "save_checkpoint"
    },
    "distributed": {
        "ClusterError", "Connection", "DaskKVStore", "DaskTrainer", "PeerLost",
        "WorkerSetupError", "check_workers", "connect", "ring_allreduce", "tree_allreduce"
    },
}


@pytest.mark.parametrize("namespace", sorted(PUBLIC))
def test_public_namespace_keeps_its_names(namespace):
    module = kf if namespace == "kf" else getattr(kf, namespace)
    missing = sorted(name for name in PUBLIC[namespace] if not hasattr(module, name))
    assert missing == [], f"kf.{namespace} lost {missing}"


def test_namespace_modules_are_the_ones_kf_shows():
    for name in ("sym", "optim", "init", "metric", "callback"):
        assert getattr(kf, name) is importlib.import_module(getattr(kf, name).__name__)
    assert kf.distributed is importlib.import_module("knetflow.distributed")

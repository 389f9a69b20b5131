"""The Knet-style front end: train plain Python functions of `kf.Param`s.

Modules, one job each:
    autograd.py     `kf.diff`, `kf.grad`, `kf.gradloss`: gradients of a traced call
    trace_cache.py  one compiled plan per traced signature, and what each call feeds
    fused_step.py   one plan per training step: loss, gradients and every update
    update.py       `kf.update`: one optimizer step on Params, in place
    minimize.py     Knet's iterators: `kf.minimize`, `kf.sgd` ... `kf.adam`, `converge`
    search.py       hyperparameter search: `kf.goldensection`, `kf.hyperband`
    gradcheck.py    `kf.gradcheck`: gradients against central differences

The optimizers, the training step's wiring and the progress bar are shared
with the MXNet-style front end and live one level up, in `knetflow.train`.
"""

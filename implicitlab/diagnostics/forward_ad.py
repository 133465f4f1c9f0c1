"""Loading torch's forward-mode AD decompositions quietly, before the first jvp.

Forward-mode AD (``torch.func.jvp``, ``torch.func.hessian``'s ``jacfwd``, and the traced
forward-over-reverse program of :mod:`implicitlab.diagnostics.linearized`) needs torch's jvp
decompositions. torch registers them itself on the first dual tensor, through a private hook
(``torch.autograd.forward_ad._maybe_load_decompositions``) that compiles them with
``torch.jit.script`` — deprecated in torch 2.13, so that first jvp emits a ``DeprecationWarning``
(an error under warnings-as-errors, noise for everyone else). Nothing else changes: the same
decompositions are registered, once per process, whoever loads them.

:func:`load_jvp_decompositions` loads them with that one warning silenced. It is called where
forward mode is about to be used (a ``torch.func`` Hessian-vector product, a trace of the
linearized program, an explicit Hessian), not at import: importing implicitlab touches no private
torch hook.
"""

from __future__ import annotations

import functools
import warnings

import torch


@functools.cache
def load_jvp_decompositions() -> None:
    """Register torch's jvp decompositions now, without the ``torch.jit.script`` deprecation warning.

    Idempotent (cached: the hook runs at most once per process). Does nothing where torch has no
    such hook (it is private and absent in some versions; torch then loads what it needs itself).
    """
    load = getattr(torch.autograd.forward_ad, "_maybe_load_decompositions", None)
    if load is None:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning)
        load()

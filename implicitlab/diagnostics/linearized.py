"""Hessian–vector products with the primal work done once per θ: a traced, split program.

A forward-over-reverse product ∇²R_c(θ) v = d/dt ∇R_c(θ + t v)|₀ does two kinds of work: the
*primal* part (the forward pass, the backward pass and every intermediate they produce), which
depends on θ and the data only, and the *tangent* part, which is linear in v and reads primal
intermediates. Lanczos asks for many products at one θ, so the primal part need only run once.

:class:`TangentProgram` traces the whole product once per chunk shape with ``make_fx`` in
``"fake"`` mode (shapes only, no arithmetic; a data-dependent Python branch raises instead of
being silently frozen into the trace), with every input a placeholder — trainable parameters θ,
tangents v, the other parameters and buffers, and the chunk (X_c, y_c) — and splits the aten
graph by dependence on v:

- ``primal``: the nodes that do not depend on v; run once per θ (:meth:`bind`), keeping only the
  values the tangent nodes read (the "boundary");
- ``tangent``: the nodes that depend on v, fed the boundary; one run per product (:meth:`apply`).

What a trace cannot see: Python-level choices that do not depend on tensor values — shapes and
the train/eval mode (the operator keys its programs by both), but also any other flag a forward
reads (``self.use_skip = False`` after the trace). Such a change needs a new operator.

The arithmetic is the same aten operations ``torch.func.jvp(grad(·))`` performs, in the same order,
so products agree with it to rounding (tests compare to 1e-10 against a dense float64 Hessian).
On the benchmark CNN a tangent run costs about 1.8–2.1 gradients on a CPU, against 2.6–3.0 for a
backward pass through a kept double-backward graph (``benchmarks/sharpness.py``). The price: one trace
per chunk shape (seconds, Python-bound) and memory for the boundary values (the activations of
the data set and their tangent-independent companions).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, fx
from torch.func import grad, jvp
from torch.fx.experimental.proxy_tensor import make_fx

from .forward_ad import load_jvp_decompositions


class TangentProgram:
    """The product program of one chunk shape, split into a primal and a tangent part.

    Args:
        chunk_loss: ``(params: dict, Xc, yc) -> scalar`` batch loss, params keyed by name (the
            trainable ones and the constants: other parameters and buffers).
        trainable: names of the trainable parameters (the variables θ), in order.
        constants: names of the other parameters and buffers (inputs of the primal part).
        example: ``(params, tangents, Xc, yc)`` of the shapes to trace (values are not read).
    """

    def __init__(self, chunk_loss: Callable, trainable: list[str], constants: list[str], example) -> None:
        self.trainable, self.constants = list(trainable), list(constants)
        P, C = len(self.trainable), len(self.constants)

        def product(*flat: Tensor) -> list[Tensor]:
            theta = dict(zip(self.trainable, flat[:P]))
            tangent = dict(zip(self.trainable, flat[P : 2 * P]))
            fixed = dict(zip(self.constants, flat[2 * P : 2 * P + C]))
            Xc, yc = flat[2 * P + C :]
            hv = jvp(grad(lambda p: chunk_loss({**fixed, **p}, Xc, yc)), (theta,), (tangent,))[1]
            return [hv[n] for n in self.trainable]

        params, tangents, Xc, yc = example
        load_jvp_decompositions()  # the trace runs jvp: load torch's decompositions quietly first
        flat = [params[n] for n in self.trainable] + [tangents[n] for n in self.trainable]
        flat += [params[n] for n in self.constants] + [Xc, yc]
        traced = make_fx(product, tracing_mode="fake")(*flat)
        self.primal, self.tangent, self.boundary_count = _split(traced.graph, range(P, 2 * P), traced)
        self.num_nodes = len(traced.graph.nodes)

    def bind(self, params: dict[str, Tensor], Xc: Tensor, yc: Tensor) -> list[Tensor]:
        """The boundary values at θ (``params`` holds θ and the constants): the primal work."""
        inputs = [params[n] for n in self.trainable] + [params[n] for n in self.constants] + [Xc, yc]
        with torch.no_grad():
            return list(self.primal(*inputs))

    def apply(self, boundary: list[Tensor], tangents: list[Tensor]) -> list[Tensor]:
        """∇²R_c v for the tangent ``[v_p for p in trainable]``: the tangent work only."""
        with torch.no_grad():
            return list(self.tangent(*tangents, *boundary))


def _split(graph: fx.Graph, tangent_positions, owner: torch.nn.Module) -> tuple[fx.GraphModule, fx.GraphModule, int]:
    """Cut ``graph`` into (primal, tangent) modules by dependence on the tangent placeholders.

    primal(non-tangent inputs…) → boundary values; tangent(tangents…, boundary…) → outputs.
    The boundary is every primal value a tangent node or the output reads (an output that does
    not depend on v — zeros, for a parameter with no curvature — is passed through it).
    """
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    tangent_inputs = {placeholders[i] for i in tangent_positions}
    depends: set[fx.Node] = set()
    for node in graph.nodes:
        if node in tangent_inputs or (node.op != "placeholder" and any(a in depends for a in node.all_input_nodes)):
            depends.add(node)
    output = next(n for n in graph.nodes if n.op == "output")
    depends.discard(output)
    users_in_tangent = lambda n: any(u in depends or u is output for u in n.users)
    boundary = [n for n in graph.nodes if n not in depends and n.op != "output" and users_in_tangent(n)]

    primal = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        if node in depends or node.op == "output":
            continue
        if node.op == "placeholder" and node in tangent_inputs:
            continue
        env[node] = primal.node_copy(node, lambda a: env[a])
    primal.output(tuple(env[n] for n in boundary))
    primal_module = fx.GraphModule(owner, primal)
    primal_module.graph.eliminate_dead_code()
    primal_module.recompile()

    tangent = fx.Graph()
    env2: dict[fx.Node, fx.Node] = {}
    for node in placeholders:
        if node in tangent_inputs:
            env2[node] = tangent.node_copy(node, lambda a: env2[a])
    for i, node in enumerate(boundary):
        env2[node] = tangent.placeholder(f"boundary_{i}")
    for node in graph.nodes:
        if node in depends and node.op != "placeholder":
            env2[node] = tangent.node_copy(node, lambda a: env2[a])
    tangent.output(fx.node.map_arg(output.args[0], lambda a: env2[a]))
    tangent_module = fx.GraphModule(owner, tangent)
    tangent_module.recompile()
    return primal_module, tangent_module, len(boundary)

"""What a logger writes: tracker results as named numbers."""

from __future__ import annotations

from collections.abc import Mapping

from ..diagnostics.lanczos import EigenResult
from ..diagnostics.weight_tracking import MarginNormRecord


def as_scalars(result, prefix: str = "sharpness") -> dict[str, float]:
    """Named floats for a logger.

    - an :class:`EigenResult` of one model: ``{prefix}`` (λ₁), ``{prefix}_residual``,
      ``{prefix}_error_bound``, ``{prefix}_converged`` (1.0 or 0.0), ``{prefix}_num_matvecs``; for
      k ≥ 2 also ``{prefix}_2``, ``{prefix}_residual_2``, … (λ_i in ``which``'s order);
    - a :class:`MarginNormRecord`: :meth:`MarginNormRecord.scalars`;
    - a mapping of names to numbers: itself, as floats.
    """
    if isinstance(result, EigenResult):
        if result.num_runs is not None:
            raise ValueError("as_scalars takes the result of one model; log an ensemble's runs one by one "
                             "(result.run(r))")
        out = {}
        for i in range(result.values.shape[0]):
            s = "" if i == 0 else f"_{i + 1}"
            out[f"{prefix}{s}"] = float(result.values[i])
            out[f"{prefix}_residual{s}"] = float(result.residuals[i])
            out[f"{prefix}_error_bound{s}"] = float(result.error_bounds[i])
        out[f"{prefix}_converged"] = float(result.all_converged)
        out[f"{prefix}_num_matvecs"] = float(result.num_matvecs)
        return out
    if isinstance(result, MarginNormRecord):
        return result.scalars()
    if isinstance(result, Mapping):
        out = {}
        for k, v in result.items():
            try:
                out[str(k)] = float(v)
            except (TypeError, ValueError):
                raise TypeError(f"cannot log {k!r}: {type(v).__name__} is not a number") from None
        return out
    raise TypeError(f"cannot log a {type(result).__name__}: give an EigenResult, a MarginNormRecord or a "
                    "dict of numbers")


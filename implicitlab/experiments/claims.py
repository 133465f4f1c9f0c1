"""The Claim record: a paper's statement, our measured value, the bound, and the verdict."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

Relation = Literal["<=", ">=", "<", ">"]


@dataclass(frozen=True)
class Claim:
    """One checked claim.

    Attributes:
        name: short identifier (``"gap_log_t_bounded"``).
        statement: what the paper says, in words.
        source: where it says it (paper, theorem / equation / figure / section).
        measured: the number we measured.
        relation: how ``measured`` must compare with ``bound`` for the claim to hold.
        bound: the threshold, traced to the paper or to an exact reference (see ``basis``).
        basis: where the threshold comes from, and how ``measured`` is computed.
    """

    name: str
    statement: str
    source: str
    measured: float
    relation: Relation
    bound: float
    basis: str = ""

    @property
    def holds(self) -> bool:
        m, b = self.measured, self.bound
        if not (isinstance(m, (int, float)) and math.isfinite(m)):
            return False
        return {"<=": m <= b, ">=": m >= b, "<": m < b, ">": m > b}[self.relation]

    @property
    def verdict(self) -> str:
        """``holds``; ``refuted`` when the number contradicts it; ``no data`` when it is not finite."""
        if not (isinstance(self.measured, (int, float)) and math.isfinite(self.measured)):
            return "no data"
        return "holds" if self.holds else "refuted"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["measured"] = float(self.measured) if math.isfinite(float(self.measured)) else None
        d["holds"] = self.holds
        d["verdict"] = self.verdict
        return d

"""The Claim record: a statement, our measured value, the bound, the verdict — and what kind of evidence it is.

A claim is one of three kinds (``kind``):

- ``"prediction"``: a statement of the paper that the data could contradict. It carries a
  **control** — the same measurement and the same rule (relation and bound) applied in a setting
  where the statement should *not* hold (square vs exponential loss, random vs true labels, no
  perturbation vs perturbation, η above vs below 2/S_min, …), computed in the same run. A
  prediction that holds while its control holds too could not have failed: its verdict is
  ``uninformative``. Where no meaningful control exists, ``control_reason`` says why in one sentence.
- ``"identity"``: follows mathematically from the setup (a closed form, a rank identity, a property
  of the update rule): a consistency check of our implementation, not evidence for the paper.
- ``"observation"``: our own description of what we measured, not a statement of the paper.

A statistical claim states how many seeds it rests on (``seeds``) and its rule across them
(``rule``: "holds on ≥ 2 of 3 seeds", "one-sided 95% bound across seeds", …). A claim that cannot
be evaluated keeps its place with verdict ``no data`` and the reason (``no_data_reason``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Relation = Literal["<=", ">=", "<", ">"]
Kind = Literal["prediction", "identity", "observation"]
KINDS: tuple[str, ...] = ("prediction", "identity", "observation")
VERDICTS: tuple[str, ...] = ("holds", "refuted", "uninformative", "no data")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def compare(measured: float, relation: Relation, bound: float) -> bool:
    """``measured relation bound`` (False when ``measured`` is not a finite number)."""
    if not _finite(measured):
        return False
    return {"<=": measured <= bound, ">=": measured >= bound, "<": measured < bound, ">": measured > bound}[relation]


@dataclass(frozen=True)
class Control:
    """A prediction's negative control: the same measurement in a setting where it should not hold.

    Attributes:
        setting: the setting, in words ("square loss instead of exponential", "random labels").
        measured: the same statistic measured there (NaN when it could not be measured).
        note: what the control's number means, if the setting needs explaining.
    """

    setting: str
    measured: float
    note: str = ""


@dataclass(frozen=True)
class Threshold:
    """A number a verdict depends on, with where it comes from.

    Attributes:
        value: the number (or a short text for a rule).
        source: ``"paper: …"``, ``"exact: …"`` (an exact reference we compute) or ``"ours: <reason>"``.
    """

    value: float | str
    source: str


@dataclass(frozen=True)
class Claim:
    """One checked claim.

    Attributes:
        name: short identifier.
        statement: what the paper says (a prediction, an identity) or what we observe, in words.
        source: where it is said (paper, theorem / equation / figure / section).
        measured: the number we measured.
        relation: how ``measured`` must compare with ``bound`` for the claim to hold.
        bound: the threshold, traced to the paper or to an exact reference (see ``basis`` and the
            experiment's threshold table).
        basis: how ``measured`` is computed and where the threshold comes from.
        kind: ``"prediction"`` | ``"identity"`` | ``"observation"`` (module docstring).
        control: a prediction's negative control (same relation and bound), or None.
        control_reason: why a prediction has no control (one sentence), when it has none.
        seeds: how many seeds the number rests on.
        rule: the rule across seeds (or "one run"), for statistical claims.
        no_data_reason: why the claim could not be evaluated, when ``measured`` is not finite.
    """

    name: str
    statement: str
    source: str
    measured: float
    relation: Relation
    bound: float
    basis: str = ""
    kind: Kind = "prediction"
    control: Control | None = None
    control_reason: str = ""
    seeds: int = 1
    rule: str = ""
    no_data_reason: str = ""
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.relation not in ("<=", ">=", "<", ">"):
            raise ValueError(f"claim {self.name!r}: unknown relation {self.relation!r}")
        if self.control is not None and self.kind != "prediction":
            raise ValueError(f"claim {self.name!r}: only a prediction carries a control")

    @property
    def holds(self) -> bool:
        """The measured value satisfies the relation (whatever the control says)."""
        return compare(self.measured, self.relation, self.bound)

    @property
    def control_holds(self) -> bool | None:
        """The control under the same rule: True (it passes too), False, or None (no control / no number)."""
        if self.control is None or not _finite(self.control.measured):
            return None
        return compare(self.control.measured, self.relation, self.bound)

    @property
    def control_verdict(self) -> str | None:
        if self.control is None:
            return None
        c = self.control_holds
        return "no data" if c is None else ("holds" if c else "refuted")

    @property
    def uninformative(self) -> bool:
        """A prediction that holds while its control holds as well: it could not have failed here."""
        return self.kind == "prediction" and self.holds and self.control_holds is True

    @property
    def verdict(self) -> str:
        """``no data`` (not finite), ``refuted``, ``uninformative`` (a prediction whose control holds
        too) or ``holds``."""
        if not _finite(self.measured):
            return "no data"
        if not self.holds:
            return "refuted"
        return "uninformative" if self.uninformative else "holds"

    def to_dict(self) -> dict:
        d = {
            "name": self.name, "statement": self.statement, "source": self.source, "kind": self.kind,
            "measured": float(self.measured) if _finite(self.measured) else None,
            "relation": self.relation, "bound": float(self.bound) if _finite(self.bound) else self.bound,
            "basis": self.basis, "seeds": int(self.seeds), "rule": self.rule or ("one run" if self.seeds == 1 else ""),
            "holds": self.holds, "verdict": self.verdict,
        }
        if self.verdict == "no data":
            d["no_data_reason"] = self.no_data_reason or "the measured value is not a finite number"
        if self.kind == "prediction":
            if self.control is not None:
                m = self.control.measured
                d["control"] = {"setting": self.control.setting, "measured": float(m) if _finite(m) else None,
                                "verdict": self.control_verdict, "note": self.control.note}
            else:
                d["control_reason"] = self.control_reason or "no control stated"
            d["uninformative"] = self.uninformative
        return d


def count(claims: list[dict]) -> dict[str, dict[str, int]]:
    """Verdict counts per kind from claim dicts (``to_dict``): ``{kind: {verdict: n}}``."""
    out: dict[str, dict[str, int]] = {k: {v: 0 for v in VERDICTS} for k in KINDS}
    for c in claims:
        out[c.get("kind", "prediction")][c["verdict"]] += 1
    return out


def headline(claims: list[dict]) -> str:
    """One line: predictions first (holding / refuted / uninformative / no data), then the rest."""
    n = count(claims)
    p = n["prediction"]
    total_p = sum(p.values())
    parts = [f"{p['holds']} of {total_p} predictions hold"]
    if p["refuted"]:
        parts.append(f"{p['refuted']} refuted")
    if p["uninformative"]:
        parts.append(f"{p['uninformative']} uninformative (their control holds too)")
    if p["no data"]:
        parts.append(f"{p['no data']} without data")
    ids, obs = n["identity"], n["observation"]
    tail = (f"; consistency checks: {ids['holds']} of {sum(ids.values())} hold"
            f"; observations: {obs['holds'] + obs['uninformative']} of {sum(obs.values())} hold")
    return ", ".join(parts) + tail

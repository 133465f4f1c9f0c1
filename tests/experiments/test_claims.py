"""The Claim record's semantics on hand cases: each verdict, the control's, the claims.json fields
(issue #15, item 6), and the counts and headline by kind. Every case is one that a wrong
implementation would fail."""

import math

import pytest

from implicitlab.experiments.claims import Claim, Control, compare, count, headline

NAN = float("nan")


def _p(measured, control=None, **kw):
    """A prediction 'measured ≤ 1'."""
    return Claim("p", "x stays below 1", "Paper, Thm 1", measured, "<=", 1.0, "max over steps", control=control, **kw)


def test_compare_relations_and_non_finite():
    assert compare(1.0, "<=", 1.0) and not compare(1.0, "<", 1.0)
    assert compare(2.0, ">", 1.0) and not compare(1.0, ">", 1.0) and compare(1.0, ">=", 1.0)
    for bad in (NAN, math.inf, -math.inf, None, "1", True):
        assert not compare(bad, "<=", 10.0) and not compare(bad, ">=", -10.0)


def test_holds_with_a_control_that_is_refuted():
    c = _p(0.5, Control("exponential loss instead of square", 3.0))
    assert c.holds and c.control_holds is False and c.control_verdict == "refuted"
    assert not c.uninformative and c.verdict == "holds"


def test_uninformative_when_the_control_holds_under_the_same_relation_and_bound():
    c = _p(0.5, Control("random labels", 0.9))
    assert c.holds and c.control_holds is True and c.control_verdict == "holds"
    assert c.uninformative and c.verdict == "uninformative"
    # the same rule: at the bound exactly, '<=' holds for the control and '<' does not
    at_bound = Control("random labels", 1.0)
    assert _p(0.5, at_bound).verdict == "uninformative"
    strict = Claim("p", "x < 1", "Paper", 0.5, "<", 1.0, control=at_bound)
    assert strict.control_holds is False and strict.verdict == "holds"


def test_refuted_whatever_the_control_says():
    for ctl in (Control("random labels", 0.2), Control("random labels", 3.0), Control("random labels", NAN), None):
        c = _p(1.5, ctl, control_reason="" if ctl else "no contrast exists")
        assert not c.holds and c.verdict == "refuted" and not c.uninformative


def test_control_without_data_leaves_the_prediction_holding():
    c = _p(0.5, Control("large init", NAN))
    assert c.control_holds is None and c.control_verdict == "no data"
    assert c.verdict == "holds" and not c.uninformative
    d = c.to_dict()
    assert d["control"]["verdict"] == "no data" and d["control"]["measured"] is None


def test_no_data_with_its_reason():
    for measured in (NAN, math.inf):
        c = _p(measured, Control("random labels", 0.5), no_data_reason="no run converged")
        assert c.verdict == "no data" and not c.uninformative  # not uninformative: it was never evaluated
        d = c.to_dict()
        assert d["verdict"] == "no data" and d["measured"] is None and d["no_data_reason"] == "no run converged"
    unexplained = _p(NAN, control_reason="none").to_dict()
    assert unexplained["no_data_reason"]  # a default reason: never empty
    assert "no_data_reason" not in _p(0.5, control_reason="none").to_dict()


def test_identity_and_observation_carry_no_control():
    with pytest.raises(ValueError, match="only a prediction carries a control"):
        Claim("rank", "rank H = n", "Thm 4", 3.0, "<=", 3.0, kind="identity", control=Control("other", 3.0))
    with pytest.raises(ValueError, match="only a prediction carries a control"):
        Claim("o", "ours", "ours", 3.0, "<=", 3.0, kind="observation", control=Control("other", 3.0))
    with pytest.raises(ValueError, match="kind"):
        Claim("x", "x", "x", 1.0, "<=", 1.0, kind="finding")
    with pytest.raises(ValueError, match="relation"):
        Claim("x", "x", "x", 1.0, "==", 1.0)
    ident = Claim("rank", "rank H = n", "Thm 4", 3.0, "<=", 3.0, kind="identity")
    d = ident.to_dict()
    assert d["kind"] == "identity" and d["verdict"] == "holds"
    assert "control" not in d and "control_reason" not in d and "uninformative" not in d


def test_to_dict_has_the_fields_of_issue_item_6():
    c = _p(0.5, Control("square loss", 3.0, note="square loss has no margin"), seeds=3,
           rule="holds on ≥ 2 of 3 seeds")
    d = c.to_dict()
    for key in ("kind", "verdict", "measured", "bound", "seeds", "rule", "control"):
        assert key in d, key
    assert (d["kind"], d["verdict"], d["measured"], d["bound"], d["seeds"], d["rule"]) == (
        "prediction", "holds", 0.5, 1.0, 3, "holds on ≥ 2 of 3 seeds")
    assert d["control"] == {"setting": "square loss", "measured": 3.0, "verdict": "refuted",
                            "note": "square loss has no margin"}
    assert d["uninformative"] is False and "control_reason" not in d
    one = _p(0.5, control_reason="the paper gives no contrasting setting").to_dict()
    assert one["control_reason"] == "the paper gives no contrasting setting" and "control" not in one
    assert one["seeds"] == 1 and one["rule"] == "one run"
    assert _p(0.5).to_dict()["control_reason"] == "no control stated"  # a missing control shows, never silent
    assert _p(0.5, Control("random labels", 0.9)).to_dict()["uninformative"] is True


def _hand_claims() -> list[dict]:
    return [
        _p(0.5, Control("a", 3.0)).to_dict(),  # holds
        _p(0.5, Control("a", 0.5)).to_dict(),  # uninformative
        _p(1.5, Control("a", 3.0)).to_dict(),  # refuted
        _p(NAN, control_reason="r").to_dict(),  # no data
        _p(0.2, control_reason="r").to_dict(),  # holds
        Claim("i", "identity", "ours", 0.0, "<=", 1e-9, kind="identity").to_dict(),  # holds
        Claim("j", "identity", "ours", 1.0, "<=", 1e-9, kind="identity").to_dict(),  # refuted
        Claim("o", "observation", "ours", 2.0, ">=", 1.0, kind="observation").to_dict(),  # holds
    ]


def test_count_by_kind_and_verdict():
    n = count(_hand_claims())
    assert n["prediction"] == {"holds": 2, "refuted": 1, "uninformative": 1, "no data": 1}
    assert n["identity"] == {"holds": 1, "refuted": 1, "uninformative": 0, "no data": 0}
    assert n["observation"] == {"holds": 1, "refuted": 0, "uninformative": 0, "no data": 0}
    assert count([]) == {k: {"holds": 0, "refuted": 0, "uninformative": 0, "no data": 0}
                         for k in ("prediction", "identity", "observation")}


def test_headline_counts_predictions_first():
    line = headline(_hand_claims())
    assert line.startswith("2 of 5 predictions hold")  # not "4 of 8 claims": identities are not findings
    assert "1 refuted" in line and "1 uninformative" in line and "1 without data" in line
    assert "consistency checks: 1 of 2 hold" in line and "observations: 1 of 1 hold" in line
    clean = headline([_p(0.5, Control("a", 3.0)).to_dict()])
    assert clean.startswith("1 of 1 predictions hold;") and "refuted" not in clean and "uninformative" not in clean

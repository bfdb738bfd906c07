"""The clinical logistic model: MLE and Wald CIs against statsmodels and scikit-learn, Firth against its
closed form, and the design (one-hot coding, missing values, training-only settings)."""

import math

import numpy as np
import pytest

from TACEResponseLib.errors import InputError
from TACEResponseTraining.clinical_model import Design, LogisticModel, fit_logistic, parse_variables


def _cohort(n=400, seed=0):
    rng = np.random.default_rng(seed)
    rows, y = [], []
    for _ in range(n):
        age = rng.normal(65, 8)
        afp = math.exp(rng.normal(2.5, 1.2))
        bclc = rng.choice(["A", "B", "C"], p=[0.4, 0.45, 0.15])
        sex = "M" if rng.random() < 0.8 else "F"
        eta = 0.5 - 0.04 * (age - 65) - 0.3 * (math.log(afp) - 2.5) - 0.8 * (bclc == "B") - 1.2 * (bclc == "C")
        y.append(int(rng.random() < 1 / (1 + math.exp(-eta))))
        rows.append({"age": "{:.1f}".format(age), "afp": "{:.2f}".format(afp), "bclc": bclc, "sex": sex})
    return rows, np.array(y)


def _matrix(rows):
    return np.array([[1.0, float(r["age"]), math.log(float(r["afp"])), r["bclc"] == "B", r["bclc"] == "C",
                      r["sex"] == "M"] for r in rows], float)


def test_design_one_hot_against_first_level():
    rows, _ = _cohort(50)
    design = Design(["age", "log(afp)", "bclc", "sex"]).fit(rows)
    assert design.names == ["intercept", "age", "log(afp)", "bclc=B", "bclc=C", "sex=M"]
    np.testing.assert_allclose(design.transform(rows), _matrix(rows))


def test_odds_ratios_match_statsmodels_and_scikit_learn():
    rows, y = _cohort()
    model = LogisticModel(["age", "log(afp)", "bclc", "sex"]).fit(rows, y)
    assert model.method == "maximum likelihood" and model.fit_result["converged"]
    table = {row["variable"]: row for row in model.odds_ratios()}
    X = _matrix(rows)
    try:
        import statsmodels.api as sm
    except ImportError:
        sm = None
    if sm is not None:
        reference = sm.Logit(y, X).fit(disp=0, method="newton", tol=1e-12)
        np.testing.assert_allclose(model.fit_result["beta"], reference.params, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose([r["se"] for r in model.odds_ratios()], reference.bse, rtol=1e-6)
        ci = np.exp(reference.conf_int(alpha=0.05))
        for name, (lo, hi) in zip(model.design.names, ci):
            assert table[name]["ci_low"] == pytest.approx(lo, rel=1e-6)
            assert table[name]["ci_high"] == pytest.approx(hi, rel=1e-6)
        np.testing.assert_allclose([r["p"] for r in model.odds_ratios()], reference.pvalues, rtol=1e-5)
    from sklearn.linear_model import LogisticRegression

    unpenalised = LogisticRegression(C=np.inf, tol=1e-12, max_iter=100_000).fit(X[:, 1:], y)
    np.testing.assert_allclose(model.fit_result["beta"][1:], unpenalised.coef_[0], rtol=1e-3, atol=1e-4)
    assert table["bclc=C"]["odds_ratio"] == pytest.approx(math.exp(unpenalised.coef_[0][3]), rel=1e-3)
    np.testing.assert_allclose(model.predict(rows), unpenalised.predict_proba(X[:, 1:])[:, 1], atol=1e-5)


def test_standard_errors_are_the_inverse_observed_information():
    """Numerical Hessian of the log-likelihood at the estimate, inverted, gives the reported covariance."""
    rows, y = _cohort(200, seed=2)
    model = LogisticModel(["age", "log(afp)"]).fit(rows, y)
    X = model.design.transform(rows)
    beta = model.fit_result["beta"]

    def loglik(b):
        eta = X @ b
        return np.sum(y * eta - np.logaddexp(0, eta))

    h, k = 1e-4, len(beta)
    hessian = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            e_i, e_j = np.eye(k)[i] * h, np.eye(k)[j] * h
            hessian[i, j] = (loglik(beta + e_i + e_j) - loglik(beta + e_i - e_j) - loglik(beta - e_i + e_j)
                             + loglik(beta - e_i - e_j)) / (4 * h * h)
    np.testing.assert_allclose(model.fit_result["covariance"], np.linalg.inv(-hessian), rtol=1e-3)


def test_separation_falls_back_to_firth_closed_form():
    """One binary covariate: Firth's estimate of the log odds ratio is the 2x2 table with 1/2 added to each
    cell (Firth 1993), finite even when the table has a zero."""
    x = ["yes"] * 10 + ["no"] * 10
    y = [1] * 10 + [1] * 4 + [0] * 6  # every 'yes' responds: complete separation for that level
    rows = [{"exposed": v} for v in x]
    assert fit_logistic(np.column_stack([np.ones(20), [v == "yes" for v in x]]), y)["separated"]
    model = LogisticModel(["exposed"]).fit(rows, y)
    assert model.method == "firth"
    a, b, c, d = 10, 0, 4, 6  # yes: responders, non-responders; no: responders, non-responders
    expected = math.log((a + 0.5) * (d + 0.5) / ((b + 0.5) * (c + 0.5)))
    assert model.coefficients["exposed=yes"] == pytest.approx(expected, abs=1e-6)
    row = {r["variable"]: r for r in model.odds_ratios()}["exposed=yes"]
    assert row["ci_low"] < row["odds_ratio"] < row["ci_high"] and math.isfinite(row["ci_high"])


def test_missing_values_and_unseen_levels_use_training_settings():
    train = [{"age": "60", "bclc": "A"}, {"age": "", "bclc": "B"}, {"age": "70", "bclc": "B"},
             {"age": "80", "bclc": ""}, {"age": "50", "bclc": "A"}, {"age": "65", "bclc": "B"}]
    design = Design(["age", "bclc"]).fit(train)
    X = design.transform(train)
    assert X[1, 1] == pytest.approx(65.0)  # mean of the five known ages
    assert X[3, 2] == 1.0  # missing stage -> the most frequent training level (B)
    unseen = design.transform([{"age": "NA", "bclc": "C"}])
    np.testing.assert_allclose(unseen, [[1.0, 65.0, 0.0]])  # C unseen in training -> reference level


def test_constant_and_collinear_columns_are_dropped():
    rows = [{"a": str(i), "b": str(2 * i), "c": "1", "s": "F"} for i in range(8)]
    design = Design(["a", "b", "c", "s"]).fit(rows)
    assert design.names == ["intercept", "a"]
    assert any(d.startswith("b") for d in design.dropped) and any(d.startswith("c") for d in design.dropped)


def test_bad_input_is_a_one_line_input_error():
    with pytest.raises(InputError, match="no column"):
        Design(["weight"], "cohort.csv").fit([{"age": "60"}])
    with pytest.raises(InputError, match="positive"):
        Design(["log(afp)"], "cohort.csv").fit([{"afp": "0"}, {"afp": "3"}])
    with pytest.raises(InputError, match="responders and non-responders"):
        LogisticModel(["age"]).fit([{"age": "1"}, {"age": "2"}], [1, 1])
    assert parse_variables("age, sex,log(afp)") == ["age", "sex", "log(afp)"]
    assert parse_variables("none") == []

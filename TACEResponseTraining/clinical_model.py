"""The clinical baseline: multivariate logistic regression of objective response on clinical variables,
with odds ratios and Wald 95% CIs from the observed information matrix. The combined model is the same
regression with the network's out-of-fold score (as a logit) added as one more variable.

Design (fitted on the training cases only, then applied unchanged to held-out cases):
- a variable is numeric when every non-missing value parses as a number, else categorical;
- ``log(name)`` uses the natural log of a positive numeric column (skewed labs such as AFP);
- numeric missing values take the training mean; categorical ones the most frequent training level;
- categorical variables are one-hot coded against their first level in sorted order (BCLC A, Child-Pugh
  A, sex F); a level unseen in training counts as the reference;
- columns that are constant or linearly dependent on earlier ones in the training cases are dropped
  (their odds ratio is not estimable) and listed in ``dropped``.

Fitting is unpenalised maximum likelihood (Newton-Raphson). When the training cases are separated (some
combination of variables predicts response perfectly, common in small folds) the MLE does not exist; the
fit then falls back to Firth's penalised likelihood (Firth, Biometrika 1993; Heinze & Schemper, Stat Med
2002), which gives finite estimates, and records ``method: "firth"``.
"""

import math
import re

import numpy as np

from TACEResponseLib.errors import InputError

DEFAULT_VARIABLES = ("age", "sex", "log(afp)", "bclc", "child_pugh", "tumor_count", "max_diameter_mm")
Z_975 = 1.959963984540054  # standard normal 97.5% quantile
_MISSING = {"", "na", "nan", "none", "null"}


def parse_variables(text):
    """'age,sex,log(afp)' -> ['age', 'sex', 'log(afp)']; 'none' or '' -> []."""
    items = [v.strip() for v in (text or "").split(",") if v.strip()]
    return [] if items in ([], ["none"]) else items


def _column_and_transform(variable):
    match = re.fullmatch(r"log\((.+)\)", variable)
    return (match.group(1), "log") if match else (variable, None)


def _is_missing(value):
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip().lower() in _MISSING


def _as_float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Design:
    """Turns rows (dicts of column -> value) into a design matrix, with settings learned from training rows."""

    def __init__(self, variables, source="dataset.csv"):
        self.variables = list(variables)
        self.source = source
        self.terms = []  # (variable, column, kind, parameter): mean for numeric, (levels, mode) for categorical
        self.names, self.dropped = [], []
        self._keep = None

    def _numeric(self, rows, column, transform):
        values = np.full(len(rows), np.nan)
        for i, row in enumerate(rows):
            raw = row.get(column)
            if _is_missing(raw):
                continue
            value = _as_float(raw)
            if transform == "log":
                if value is None or value <= 0:
                    raise InputError(self.source, "column {}: log({}) needs positive numbers, got {!r}".format(
                        column, column, raw))
                value = math.log(value)
            values[i] = value
        return values

    def fit(self, rows):
        if not rows:
            raise InputError(self.source, "no cases to fit the clinical model on")
        columns = []
        for variable in self.variables:
            column, transform = _column_and_transform(variable)
            if column not in rows[0]:
                raise InputError(self.source, "clinical variable {!r}: no column {!r}".format(variable, column))
            present = [row.get(column) for row in rows if not _is_missing(row.get(column))]
            if not present:
                self.dropped.append(variable + " (all missing)")
                continue
            if transform or all(_as_float(v) is not None for v in present):
                values = self._numeric(rows, column, transform)
                mean = float(np.nanmean(values))
                self.terms.append((variable, column, "numeric", (transform, mean)))
                columns.append((variable, np.where(np.isnan(values), mean, values)))
            else:
                counts = {}
                for v in present:
                    counts[str(v).strip()] = counts.get(str(v).strip(), 0) + 1
                levels = sorted(counts)
                mode = max(levels, key=lambda level: (counts[level], -levels.index(level)))
                self.terms.append((variable, column, "categorical", (levels, mode)))
                filled = [mode if _is_missing(row.get(column)) else str(row.get(column)).strip() for row in rows]
                for level in levels[1:]:
                    columns.append(("{}={}".format(variable, level), np.array([f == level for f in filled], float)))
        # keep a column only if it adds a dimension (intercept first): constant and collinear ones go
        matrix = [np.ones(len(rows))]
        self._keep = []
        for name, values in columns:
            trial = np.column_stack(matrix + [values])
            if np.linalg.matrix_rank(trial) > len(matrix):
                matrix.append(values)
                self._keep.append(name)
            else:
                self.dropped.append(name + " (constant or collinear in the training cases)")
        self.names = ["intercept"] + self._keep
        return self

    def transform(self, rows):
        columns = {}
        for variable, column, kind, parameter in self.terms:
            if kind == "numeric":
                transform, mean = parameter
                values = self._numeric(rows, column, transform)
                columns[variable] = np.where(np.isnan(values), mean, values)
            else:
                levels, mode = parameter
                filled = [mode if _is_missing(row.get(column)) else str(row.get(column)).strip() for row in rows]
                for level in levels[1:]:
                    columns["{}={}".format(variable, level)] = np.array([f == level for f in filled], float)
        return np.column_stack([np.ones(len(rows))] + [columns[name] for name in self._keep])


def _expit(eta):
    return 0.5 * (1.0 + np.tanh(0.5 * eta))  # overflow-free logistic


def fit_logistic(X, y, firth=False, max_iter=200, tol=1e-9):
    """Newton-Raphson for logistic regression (X includes the intercept column).

    Returns a dict: beta, covariance (inverse observed information at the estimate; for the logit link it
    equals the expected information), log_likelihood, iterations, converged, separated (fitted
    probabilities hit 0 or 1, i.e. the MLE does not exist)."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    beta = np.zeros(X.shape[1])

    def objective(b):
        eta = X @ b
        # log-likelihood written stably: y*eta - log(1 + e^eta)
        value = float(np.sum(y * eta - np.logaddexp(0.0, eta)))
        if firth:
            p = _expit(eta)
            sign, logdet = np.linalg.slogdet((X * (p * (1 - p))[:, None]).T @ X)
            value += 0.5 * logdet if sign > 0 else -np.inf
        return value

    current = objective(beta)
    converged, iterations = False, 0
    for iterations in range(1, max_iter + 1):
        p = _expit(X @ beta)
        w = p * (1.0 - p)
        information = (X * w[:, None]).T @ X
        residual = y - p
        if firth:
            # hat-matrix diagonal of W^1/2 X (X'WX)^-1 X' W^1/2: Firth's modified score adds h (1/2 - p)
            hat = np.einsum("ij,ij->i", X @ np.linalg.pinv(information), X) * w
            residual = residual + hat * (0.5 - p)
        step = np.linalg.lstsq(information, X.T @ residual, rcond=None)[0]
        scale = 1.0
        while scale > 1e-6:  # step halving: never let the (penalised) likelihood drop
            candidate = beta + scale * step
            value = objective(candidate)
            if value >= current - 1e-12:
                break
            scale /= 2.0
        beta, current = candidate, value
        if np.max(np.abs(scale * step)) < tol:
            converged = True
            break
    p = _expit(X @ beta)
    information = (X * (p * (1.0 - p))[:, None]).T @ X
    separated = bool(np.any(p < 1e-8) or np.any(p > 1 - 1e-8)) or not converged
    eta = X @ beta
    return {"beta": beta, "covariance": np.linalg.pinv(information),
            "log_likelihood": float(np.sum(y * eta - np.logaddexp(0.0, eta))),
            "iterations": iterations, "converged": converged, "separated": separated and not firth}


class LogisticModel:
    """Design + logistic fit: ``fit(rows, y)``, ``predict(rows)`` (probabilities), ``odds_ratios()``."""

    def __init__(self, variables, source="dataset.csv"):
        self.design = Design(variables, source)
        self.fit_result = None
        self.method = None

    def fit(self, rows, y):
        y = np.asarray(y, float)
        if len(set(y.tolist())) < 2:
            raise InputError(self.design.source, "the clinical model needs responders and non-responders")
        X = self.design.fit(rows).transform(rows)
        result = fit_logistic(X, y)
        self.method = "maximum likelihood"
        if result["separated"]:
            result = fit_logistic(X, y, firth=True)
            self.method = "firth"
        self.fit_result = result
        return self

    @property
    def coefficients(self):
        return dict(zip(self.design.names, self.fit_result["beta"].tolist()))

    def predict(self, rows):
        return _expit(self.design.transform(rows) @ self.fit_result["beta"])

    def odds_ratios(self):
        """One row per coefficient: log-odds, SE, OR and Wald 95% CI (exp(beta +- 1.96 SE)), p."""
        beta = self.fit_result["beta"]
        se = np.sqrt(np.clip(np.diag(self.fit_result["covariance"]), 0.0, None))
        table = []
        for name, b, s in zip(self.design.names, beta, se):
            z = b / s if s > 0 else float("nan")
            table.append({"variable": name, "coefficient": float(b), "se": float(s),
                          "odds_ratio": math.exp(b) if abs(b) < 700 else float("inf"),
                          "ci_low": math.exp(b - Z_975 * s) if abs(b - Z_975 * s) < 700 else float("nan"),
                          "ci_high": math.exp(b + Z_975 * s) if abs(b + Z_975 * s) < 700 else float("nan"),
                          "p": math.erfc(abs(z) / math.sqrt(2.0)) if z == z else float("nan")})
        return table

    def describe(self):
        return {"variables": self.design.variables, "columns": self.design.names, "dropped": self.design.dropped,
                "method": self.method, "converged": bool(self.fit_result["converged"]),
                "odds_ratios": self.odds_ratios()}

"""Ground-truth outcome model of the synthetic TACE cohort.

Objective response (mRECIST CR+PR) is drawn from a logistic model of
lesion features that are visible in the portal-venous phase; overall
survival (OS) and time to progression (TTP) are drawn from Weibull
proportional-hazards models driven by the same linear predictor.  Every
number used here is documented in docs/synthetic_cohort.md and exported by
:func:`describe` into cohort.json, so the achievable (Bayes) performance
of a predictor is known exactly.
"""
from __future__ import annotations

import math

import numpy as np

MODEL_VERSION = "1.0"

# Logistic response model (see FORMULA).
COEFFICIENTS = {
    "b0": 0.3,  # intercept: about half of the lesion-bearing cases respond
    "b1_vascularity": 4.2,  # hypervascular (deep PV washout) responds better
    "b2_log_volume": -0.6,  # larger total burden responds worse
    "b3_necrosis": -1.0,  # pre-existing necrosis: slightly worse
    "b4_capsule": 1.0,  # encapsulated lesions respond better
    "b5_multifocal": -0.7,  # more than two lesions respond worse
}
REFERENCE_VOLUME_ML = 30.0
VOLUME_FLOOR_ML = 1.0  # keeps log(volume) finite for tiny / absent tumours

FORMULA = (
    "eta = b0 + b1*(vasc_w - 0.5) + b2*(ln(max(V_ml, 1)) - ln(30)) + b3*necrosis_w "
    "+ b4*capsule_frac + b5*[n_lesions > 2];  p_OR = 1 / (1 + exp(-eta));  "
    "response ~ Bernoulli(p_OR)  (cases without lesions: response unknown)"
)

# Survival: Weibull PH, S(t) = exp(-(t/scale)^shape * exp(lp)), t in weeks.
SURVIVAL = {
    "os": {
        "scale_weeks": 130.0,
        "shape": 1.2,
        "gamma_eta": 0.40,  # higher eta (likely responder) -> lower hazard
        "delta_response": 0.50,  # an observed response lowers the hazard further
        "beta_child_pugh_b": 0.50,
        "beta_bclc_c": 0.40,
        "beta_age_per_decade": 0.15,
    },
    "ttp": {
        "scale_weeks": 45.0,
        "shape": 1.0,
        "gamma_eta": 0.35,
        "delta_response": 0.90,
    },
    "admin_censoring_weeks": [208.0, 260.0],  # staggered accrual over one year
    "loss_to_follow_up_rate_per_week": 0.002,
}
SURVIVAL_FORMULA = (
    "lp_os = -gamma_os*eta - delta_os*R + b_cp*[child_pugh=B] + b_c*[bclc=C] + b_age*(age-65)/10; "
    "lp_ttp = -gamma_ttp*eta - delta_ttp*R; T = scale*(E*exp(-lp))^(1/shape), E~Exp(1); "
    "C = min(U(208,260), Exp(rate 0.002/week)); os = min(T_death, C); "
    "ttp = min(T_prog, T_death, C) with event only if progression came first (death censors TTP). "
    "R = observed response (0 when unknown)."
)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def case_features(lesions) -> dict:
    """Case-level features from per-lesion dicts (volume_ml, vascularity,
    necrosis_fraction, capsule)."""
    vols = np.array([float(les["volume_ml"]) for les in lesions], dtype=float)
    n = len(lesions)
    total = float(vols.sum()) if n else 0.0
    if n and total > 0:
        w = vols / total
    else:
        w = np.full(n, 1.0 / n) if n else np.zeros(0)
    vasc = float(sum(wi * les["vascularity"] for wi, les in zip(w, lesions))) if n else 0.5
    nec = float(sum(wi * les["necrosis_fraction"] for wi, les in zip(w, lesions))) if n else 0.0
    cap = float(np.mean([bool(les["capsule"]) for les in lesions])) if n else 0.0
    return {
        "n_lesions": n,
        "total_volume_ml": total,
        "vascularity_w": vasc,
        "necrosis_w": nec,
        "capsule_fraction": cap,
        "multifocal": int(n > 2),
    }


def linear_predictor(features: dict) -> float:
    c = COEFFICIENTS
    vol = max(features["total_volume_ml"], VOLUME_FLOOR_ML)
    return (
        c["b0"]
        + c["b1_vascularity"] * (features["vascularity_w"] - 0.5)
        + c["b2_log_volume"] * (math.log(vol) - math.log(REFERENCE_VOLUME_ML))
        + c["b3_necrosis"] * features["necrosis_w"]
        + c["b4_capsule"] * features["capsule_fraction"]
        + c["b5_multifocal"] * float(features["n_lesions"] > 2)
    )


def response_probability(features: dict) -> float:
    """True P(objective response); NaN when there is no lesion to assess."""
    if features["n_lesions"] == 0:
        return float("nan")
    return sigmoid(linear_predictor(features))


def draw_clinical(rng: np.random.Generator, features: dict, max_diameter_mm: float) -> dict:
    """Clinical covariates; AFP, BCLC and Child-Pugh lean on tumour burden."""
    n = features["n_lesions"]
    log_burden = math.log(max(features["total_volume_ml"], VOLUME_FLOOR_ML)) - math.log(REFERENCE_VOLUME_ML)
    age = int(round(float(np.clip(rng.normal(66.0, 8.0), 45, 85))))
    sex = "M" if rng.random() < 0.8 else "F"
    afp = math.exp(math.log(12.0) + 0.5 * log_burden + rng.normal(0.0, 1.2))
    afp = round(float(np.clip(afp, 1.0, 60000.0)), 1)
    if n == 0 or (n == 1 and max_diameter_mm <= 50) or (n <= 3 and max_diameter_mm <= 30):
        bclc = "A"
    else:
        bclc = "B"
    # Stage C stands in for macrovascular invasion, more likely with burden.
    p_c = 0.25 if (features["total_volume_ml"] > 150 or n >= 4) else 0.03
    if n and rng.random() < p_c:
        bclc = "C"
    p_cpb = sigmoid(-1.5 + 0.3 * log_burden)
    child_pugh = "B" if rng.random() < p_cpb else "A"
    return {
        "age": age,
        "sex": sex,
        "afp": afp,
        "bclc": bclc,
        "child_pugh": child_pugh,
        "tumor_count": n,
        "max_diameter_mm": round(float(max_diameter_mm), 1),
    }


def _weibull(rng, scale, shape, lp):
    return scale * (rng.exponential(1.0) * math.exp(-lp)) ** (1.0 / shape)


def draw_outcomes(rng: np.random.Generator, features: dict, clinical: dict) -> dict:
    """Response and survival.  Draws a fixed number of variates in a fixed
    order so that the outcome stream never depends on image geometry."""
    u_resp = rng.random()
    eta = linear_predictor(features)
    p = response_probability(features)
    response = None if math.isnan(p) else int(u_resp < p)
    r = float(response or 0)
    so, st = SURVIVAL["os"], SURVIVAL["ttp"]
    lp_os = (
        -so["gamma_eta"] * eta
        - so["delta_response"] * r
        + so["beta_child_pugh_b"] * (clinical["child_pugh"] == "B")
        + so["beta_bclc_c"] * (clinical["bclc"] == "C")
        + so["beta_age_per_decade"] * (clinical["age"] - 65) / 10.0
    )
    lp_ttp = -st["gamma_eta"] * eta - st["delta_response"] * r
    t_death = _weibull(rng, so["scale_weeks"], so["shape"], lp_os)
    t_prog = _weibull(rng, st["scale_weeks"], st["shape"], lp_ttp)
    lo, hi = SURVIVAL["admin_censoring_weeks"]
    c_admin = rng.uniform(lo, hi)
    c_loss = rng.exponential(1.0 / SURVIVAL["loss_to_follow_up_rate_per_week"])
    cens = min(c_admin, c_loss)
    os_time = min(t_death, cens)
    os_event = int(t_death <= cens)
    ttp_time = min(t_prog, os_time)
    ttp_event = int(t_prog <= os_time)
    # Round to 0.1 week, never 0, and keep ttp <= os after rounding.
    os_r = max(round(os_time, 1), 0.1)
    ttp_r = min(max(round(ttp_time, 1), 0.1), os_r)
    return {
        "eta": eta,
        "response_probability": p,
        "response": response,
        "os_time": os_r,
        "os_event": os_event,
        "ttp_time": ttp_r,
        "ttp_event": ttp_event,
    }


def describe() -> dict:
    """Everything needed to reproduce the outcome model, for cohort.json."""
    return {
        "version": MODEL_VERSION,
        "formula": FORMULA,
        "coefficients": dict(COEFFICIENTS),
        "reference_volume_ml": REFERENCE_VOLUME_ML,
        "volume_floor_ml": VOLUME_FLOOR_ML,
        "features": {
            "vasc_w": "lesion-volume-weighted mean vascularity (0..1; PV washout depth 5+40*v HU)",
            "V_ml": "total tumour volume in mL (sum over lesions)",
            "necrosis_w": "lesion-volume-weighted mean necrotic fraction",
            "capsule_frac": "fraction of lesions with an enhancing capsule",
            "n_lesions": "number of lesions",
        },
        "survival_formula": SURVIVAL_FORMULA,
        "survival": SURVIVAL,
    }

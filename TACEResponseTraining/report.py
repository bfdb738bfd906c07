"""`evaluate RUNDIR -o REPORTDIR`: the cross-validation's report.

Reads the predictions that ``cv`` wrote (nothing is refitted here) and writes report.md, report.json,
predictions.csv, segmentation.csv and the figures roc.png, calibration.png and km.png.
"""

import csv
import json
import math
from pathlib import Path

import numpy as np

from TACEResponseLib.errors import InputError

from . import roc_stats
from .cv import as_float, read_csv
from .metrics import roc_auc

NAMES = {
    "multitask": "Multi-task network (multi-DL)",
    "classification": "Classification-only network",
    "segmentation": "Segmentation-only network",
    "clinical": "Clinical model",
    "combined": "Combined model",
}
COHORT_NAMES = {"internal": "Internal validation (out-of-fold)", "external": "External test (fold ensemble)"}
SEGMENTATION_SCORES = ("liver_dice", "tumor_dice", "liver_hd95_mm", "tumor_hd95_mm", "liver_volume_error_ml",
                       "tumor_volume_error_ml")
PREDICTION_COLUMNS = ("model", "cohort", "case_id", "fold", "response", "probability", "cutoff", "risk_group",
                      "os_time", "os_event", "ttp_time", "ttp_event")


def _nan_to_none(value):
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _load(run_dir):
    run_dir = Path(run_dir)
    cv_file = run_dir / "cv.json"
    if not cv_file.is_file():
        raise InputError(run_dir, "not a cross-validation folder (cv.json is missing; run 'cv' first)")
    with open(str(cv_file), encoding="utf-8") as stream:
        cv = json.load(stream)
    tables = {}
    for model, entry in cv["models"].items():
        for cohort, relative in entry["predictions"].items():
            path = run_dir / relative
            if not path.is_file():
                raise InputError(path, "predictions missing; rerun 'cv' on this RUNDIR to finish it")
            tables[(model, cohort)] = read_csv(path)
    if not tables:
        raise InputError(cv_file, "no finished models; rerun 'cv' on this RUNDIR")
    return cv, tables


def _arrays(rows, *columns):
    return [np.array([as_float(r.get(c)) for r in rows]) for c in columns]


def survival_by_risk_group(rows):
    """Kaplan-Meier fits of overall survival per risk group and the log-rank p between the groups."""
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    groups = {}
    for group in ("low", "high"):
        members = [r for r in rows if r.get("risk_group") == group and math.isfinite(as_float(r.get("os_time")))]
        if members:
            time, event = _arrays(members, "os_time", "os_event")
            groups[group] = (time, event)
    out = {"p": float("nan"), "groups": {}, "fits": {}}
    for group, (time, event) in groups.items():
        fit = KaplanMeierFitter().fit(time, event, label="{} risk (n={})".format(group, len(time)))
        out["fits"][group] = fit
        out["groups"][group] = {"cases": int(len(time)), "events": int(event.sum()),
                                "median_os_weeks": float(fit.median_survival_time_)}
    if len(groups) == 2:
        (t_low, e_low), (t_high, e_high) = groups["low"], groups["high"]
        out["p"] = float(logrank_test(t_low, t_high, event_observed_A=e_low, event_observed_B=e_high).p_value)
    return out


def response_statistics(rows, n_boot, seed):
    labels, probability, cutoff = _arrays(rows, "response", "probability", "cutoff")
    auc, ci = roc_stats.auc_with_ci(labels, probability, n_boot=n_boot, seed=seed)
    known = np.isin(labels, (0, 1)) & np.isfinite(probability)
    stats = {"cases": len(rows), "cases_with_response": int(known.sum()),
             "responders": int((labels[known] == 1).sum()), "auc": auc, "auc_ci": list(ci),
             "brier": roc_stats.brier_score(labels, probability),
             "calibration_bins": roc_stats.calibration_bins(labels, probability)}
    stats.update(roc_stats.operating_point(labels, probability, cutoff))
    folds = sorted({r["fold"] for r in rows if r.get("fold") not in (None, "")}, key=int)
    if len(folds) > 1:  # spread over folds, beside the pooled out-of-fold AUC
        stats["auc_by_fold"] = [_fold_auc(rows, f) for f in folds]
    return stats


def _fold_auc(rows, fold):
    labels, probability = _arrays([r for r in rows if r["fold"] == fold], "response", "probability")
    keep = np.isin(labels, (0, 1)) & np.isfinite(probability)
    return roc_auc(labels[keep], probability[keep])


def segmentation_statistics(rows):
    out = {}
    for score in SEGMENTATION_SCORES:
        (values,) = _arrays(rows if not score.startswith("tumor") else
                            [r for r in rows if r.get("has_tumor") in ("True", "true", "1", True)], score)
        values = values[np.isfinite(values)]
        if score.endswith("volume_error_ml"):
            out[score.replace("error", "abs_error")] = {
                "mean": float(np.abs(values).mean()) if len(values) else float("nan")}
        out[score] = {"cases": int(len(values)),
                      "mean": float(values.mean()) if len(values) else float("nan"),
                      "sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                      "median": float(np.median(values)) if len(values) else float("nan")}
    return out


def _bayes_auc(dataset_dir, rows):
    """The synthetic cohort's ceiling: AUC of the true response probabilities (cohort.json), same cases."""
    path = Path(dataset_dir) / "cohort.json" if dataset_dir else None
    if not path or not path.is_file():
        return None
    with open(str(path), encoding="utf-8") as stream:
        truth = json.load(stream).get("true_probability", {})
    pairs = [(as_float(r["response"]), truth.get(r["case_id"])) for r in rows]
    pairs = [(y, p) for y, p in pairs if y in (0.0, 1.0) and p is not None]
    if not pairs:
        return None
    return roc_auc([y for y, _ in pairs], [p for _, p in pairs])


def _figures(report_dir, models, cohorts, tables, stats, survival):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    response_models = [m for m in models if m in stats]
    width = 5.0
    def per_cohort_figure(file_name, draw, legend_loc, **axes_settings):
        """One panel per cohort, one curve per model (``draw(ax, model, cohort, stats)``), the diagonal."""
        fig, axes = plt.subplots(1, len(cohorts), figsize=(width * len(cohorts), width), squeeze=False)
        for ax, cohort in zip(axes[0], cohorts):
            for model in response_models:
                if cohort in stats[model]:
                    draw(ax, model, cohort, stats[model][cohort])
            ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
            ax.set(title=COHORT_NAMES.get(cohort, cohort), **axes_settings)
            ax.legend(loc=legend_loc, fontsize=7)
        fig.tight_layout()
        fig.savefig(str(report_dir / file_name), dpi=120)
        plt.close(fig)

    def roc(ax, model, cohort, s):
        labels, probability = _arrays(tables[(model, cohort)], "response", "probability")
        fpr, tpr = roc_stats.roc_curve(labels, probability)
        ax.step(fpr, tpr, where="post", label="{}: AUC {} ({}-{})".format(
            NAMES.get(model, model), _fmt(s["auc"]), *[_fmt(v) for v in s["auc_ci"]]))

    def calibration(ax, model, cohort, s):
        points = np.array(s["calibration_bins"]) if s["calibration_bins"] else np.zeros((0, 3))
        ax.plot(points[:, 0], points[:, 1], marker="o", label="{}: Brier {}".format(
            NAMES.get(model, model), _fmt(s["brier"])))

    per_cohort_figure("roc.png", roc, "lower right", xlabel="1 - specificity", ylabel="sensitivity",
                      xlim=(0, 1), ylim=(0, 1.02))
    per_cohort_figure("calibration.png", calibration, "upper left",
                      xlabel="mean predicted probability (equal-count bins)", ylabel="observed response rate",
                      xlim=(0, 1), ylim=(0, 1))

    rows = max(len(response_models), 1)
    fig, axes = plt.subplots(rows, len(cohorts), figsize=(width * len(cohorts), 3.6 * rows), squeeze=False)
    for i, model in enumerate(response_models):
        for j, cohort in enumerate(cohorts):
            ax = axes[i][j]
            result = survival.get(model, {}).get(cohort)
            if result:
                for group, fit in result["fits"].items():
                    fit.plot_survival_function(ax=ax, ci_show=False,
                                               color="tab:green" if group == "low" else "tab:red")
            p = result["p"] if result else float("nan")
            ax.set(title="{}\n{}: log-rank p = {}".format(NAMES.get(model, model), COHORT_NAMES.get(cohort, cohort),
                                                          "{:.3g}".format(p) if p == p else "n/a"),
                   xlabel="weeks", ylabel="overall survival", ylim=(0, 1.02))
            ax.title.set_fontsize(8)
            if ax.get_legend():
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(str(report_dir / "km.png"), dpi=120)
    plt.close(fig)


def _fmt(value, digits=3):
    return "n/a" if value is None or not math.isfinite(value) else "{:.{}f}".format(value, digits)


def _markdown(report, cv):
    cohorts = report["cohorts"]
    lines = ["# Cross-validation report", "",
             "Dataset `{}`, {} folds (patient level, stratified on response){}. Response: objective response "
             "(mRECIST CR+PR = 1). Probabilities >= the cutoff predict a responder (*low* risk); cutoffs are chosen "
             "by the Youden index on each fold's training cases; external predictions average the fold models and "
             "use the mean cutoff.".format(cv["dataset"], cv["folds"],
                                           ", external test `{}`".format(cv["external"]) if cv.get("external") else ""),
             "", "## Response (laid out like the results table of Li et al. 2022)", ""]
    header = ["Model"]
    for cohort in cohorts:
        name = COHORT_NAMES.get(cohort, cohort)
        header += ["{}: AUC (95% CI)".format(name), "Accuracy", "Sensitivity", "Specificity"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in report["models"]:
        cells = [NAMES.get(model, model)]
        for cohort in cohorts:
            s = report["metrics"].get(model, {}).get(cohort)
            if not s or "auc" not in s:
                cells += ["n/a (no response output)" if model == "segmentation" else "n/a", "", "", ""]
                continue
            lo, hi = s["auc_ci"]
            cells += ["{} ({}-{})".format(_fmt(s["auc"]), _fmt(lo), _fmt(hi)), _fmt(s["accuracy"]),
                      _fmt(s["sensitivity"]), _fmt(s["specificity"])]
        lines.append("| " + " | ".join(cells) + " |")
    bayes = {c: v for c, v in report.get("bayes_auc", {}).items() if v is not None and math.isfinite(v)}
    if bayes:
        lines += ["", "Bayes AUC of the synthetic cohort (true response probabilities, the ceiling): " + ", ".join(
            "{} {:.3f}".format(COHORT_NAMES.get(c, c), v) for c, v in bayes.items()) + "."]
    lines += ["", "AUC 95% CI: percentile bootstrap ({} replicates, responders and non-responders resampled "
              "separately). Brier scores and reliability curves: `calibration.png`; ROC curves: `roc.png`.".format(
                  report["bootstrap_replicates"]), ""]
    lines += ["## Comparison of AUCs (DeLong test, paired)", "", "| Cohort | Model A | Model B | AUC A | AUC B | z | p |",
              "|---|---|---|---|---|---|---|"]
    for test in report["delong"]:
        lines.append("| {} | {} | {} | {} | {} | {} | {} |".format(
            COHORT_NAMES.get(test["cohort"], test["cohort"]), NAMES.get(test["model_a"], test["model_a"]),
            NAMES.get(test["model_b"], test["model_b"]), _fmt(test["auc_a"]), _fmt(test["auc_b"]),
            _fmt(test["z"], 2), _fmt(test["p"], 4)))
    lines += ["", "## Overall survival by risk group (Kaplan-Meier, log-rank)", "",
              "| Model | Cohort | low risk: cases / deaths / median OS (weeks) | high risk: cases / deaths / median OS "
              "(weeks) | log-rank p |", "|---|---|---|---|---|"]
    for model, by_cohort in report["survival"].items():
        for cohort, s in by_cohort.items():
            cells = []
            for group in ("low", "high"):
                g = s["groups"].get(group)
                cells.append("{} / {} / {}".format(g["cases"], g["events"], _fmt(g["median_os_weeks"], 1))
                             if g else "0")
            lines.append("| {} | {} | {} | {} | {} |".format(NAMES.get(model, model), COHORT_NAMES.get(cohort, cohort),
                                                            cells[0], cells[1], _fmt(s["p"], 4)))
    lines += ["", "Curves: `km.png`.", "", "## Segmentation (on each case's own grid)", "",
              "| Model | Cohort | liver Dice | tumor Dice | liver HD95 (mm) | tumor HD95 (mm) | liver volume error "
              "(mL) | tumor volume error (mL) |", "|---|---|---|---|---|---|---|---|"]
    for model, by_cohort in report["segmentation"].items():
        for cohort, s in by_cohort.items():
            lines.append("| {} | {} | {} |".format(NAMES.get(model, model), COHORT_NAMES.get(cohort, cohort), " | ".join(
                "{} +- {}".format(_fmt(s[k]["mean"]), _fmt(s[k]["sd"])) for k in SEGMENTATION_SCORES)))
    lines += ["", "Mean +- SD over cases; tumor scores over cases with a reference tumor. HD95: the larger of the two "
              "directed 95th-percentile surface distances, in mm. Volume error: predicted - reference. Per case: "
              "`segmentation.csv`.", ""]
    for name, entry in report.get("logistic_models", {}).items():
        full = entry["all_internal_cases"]
        lines += ["## {}: odds ratios (fitted on all {} internal cases with a response)".format(
            NAMES.get(name, name), full["cases"]), "",
            "Method: {}{}. Odds ratios per unit of each variable (categorical: against the first level).".format(
                "Firth's penalised likelihood (the cases are separated: no finite maximum-likelihood estimate)"
                if full["method"] == "firth" else "maximum likelihood",
                "; dropped: " + ", ".join(full["dropped"]) if full["dropped"] else ""),
            "", "| Variable | OR | 95% CI (Wald) | p |", "|---|---|---|---|"]
        for row in full["odds_ratios"]:
            if row["variable"] == "intercept":
                continue
            lines.append("| {} | {} | {}-{} | {} |".format(row["variable"], _fmt(row["odds_ratio"]),
                                                           _fmt(row["ci_low"]), _fmt(row["ci_high"]), _fmt(row["p"], 4)))
        lines.append("")
    return "\n".join(lines) + "\n"


def evaluate(run_dir, report_dir, n_boot=2000, seed=0, overwrite=False, log=print):
    run_dir, report_dir = Path(run_dir), Path(report_dir)
    cv, tables = _load(run_dir)
    if report_dir.exists() and any(report_dir.iterdir()) and not overwrite:
        raise InputError(report_dir, "exists and is not empty; use --overwrite or pick a new folder")
    report_dir.mkdir(parents=True, exist_ok=True)
    models = [m for m in ("multitask", "classification", "segmentation", "clinical", "combined") if m in cv["models"]]
    models += [m for m in cv["models"] if m not in models]
    cohorts = [c for c in cv["cohorts"] if any((m, c) in tables for m in models)]

    metrics, survival, segmentation = {}, {}, {}
    for model in models:
        for cohort in cohorts:
            rows = tables.get((model, cohort))
            if rows is None:
                continue
            if any(math.isfinite(as_float(r.get("probability"))) for r in rows):
                metrics.setdefault(model, {})[cohort] = response_statistics(rows, n_boot, seed)
                survival.setdefault(model, {})[cohort] = survival_by_risk_group(rows)
            if any(math.isfinite(as_float(r.get("liver_dice"))) for r in rows):
                segmentation.setdefault(model, {})[cohort] = segmentation_statistics(rows)

    delong = []
    response_models = [m for m in models if m in metrics]
    for cohort in cohorts:
        for i, a in enumerate(response_models):
            for b in response_models[i + 1:]:
                if cohort not in metrics[a] or cohort not in metrics[b]:
                    continue
                pb = {r["case_id"]: as_float(r["probability"]) for r in tables[(b, cohort)]}
                rows = [r for r in tables[(a, cohort)] if r["case_id"] in pb]
                labels, pa = _arrays(rows, "response", "probability")
                test = roc_stats.delong_test(labels, pa, [pb[r["case_id"]] for r in rows])
                delong.append(dict(test, cohort=cohort, model_a=a, model_b=b))

    datasets = {"internal": cv.get("dataset"), "external": cv.get("external")}
    any_rows = {c: next(tables[(m, c)] for m in models if (m, c) in tables) for c in cohorts}
    logistic = {}
    for model in models:
        path = run_dir / model / "model.json"
        if cv["models"][model].get("kind") == "logistic" and path.is_file():
            with open(str(path), encoding="utf-8") as stream:
                logistic[model] = json.load(stream)

    report = {
        "models": models, "cohorts": cohorts, "bootstrap_replicates": n_boot,
        "auc": {m: {c: s["auc"] for c, s in metrics[m].items()} for m in metrics},
        "auc_ci": {m: {c: s["auc_ci"] for c, s in metrics[m].items()} for m in metrics},
        "logrank_p": {m: {c: s["p"] for c, s in survival[m].items()} for m in survival},
        "metrics": metrics,
        "delong": delong,
        "survival": {m: {c: {"p": s["p"], "groups": s["groups"]} for c, s in survival[m].items()} for m in survival},
        "segmentation": segmentation,
        "bayes_auc": {c: _bayes_auc(datasets.get(c), any_rows[c]) for c in cohorts},
        "logistic_models": {m: {"variables": d["variables"], "all_internal_cases": d["all_internal_cases"]}
                            for m, d in logistic.items()},
    }
    long_rows = []
    for (model, cohort), rows in sorted(tables.items(), key=lambda item: (models.index(item[0][0]),
                                                                          cohorts.index(item[0][1]))):
        for r in rows:
            long_rows.append(dict({c: r.get(c, "") for c in PREDICTION_COLUMNS}, model=model, cohort=cohort))
    _write_table(report_dir / "predictions.csv", long_rows, PREDICTION_COLUMNS)
    seg_rows = [dict({"model": m, "cohort": c, "case_id": r["case_id"], "has_tumor": r.get("has_tumor", "")},
                     **{k: r.get(k, "") for k in SEGMENTATION_SCORES + ("liver_volume_ml", "liver_reference_ml",
                                                                       "tumor_volume_ml", "tumor_reference_ml")})
                for (m, c), rows in tables.items() if m in segmentation for r in rows]
    if seg_rows:
        _write_table(report_dir / "segmentation.csv", seg_rows, list(seg_rows[0]))
    _figures(report_dir, models, cohorts, tables, metrics, survival)
    clean = _nan_to_none(report)
    with open(str(report_dir / "report.json"), "w", encoding="utf-8") as stream:
        json.dump(clean, stream, indent=1)
    (report_dir / "report.md").write_text(_markdown(clean_for_markdown(clean), cv), encoding="utf-8")
    log("wrote {}".format(report_dir / "report.md"))
    return clean


def clean_for_markdown(report):
    """None (JSON's NaN) back to NaN so the formatter prints n/a."""
    def back(value):
        if isinstance(value, dict):
            return {k: back(v) for k, v in value.items()}
        if isinstance(value, list):
            return [back(v) for v in value]
        return float("nan") if value is None else value
    return back(report)


def _write_table(path, rows, fields):
    with open(str(path), "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

"""report.pdf: one A4 page for a tumor board, drawn from result.json and the preview slices.

Everything on the page comes from the result document (the numbers the CLI wrote) and the two preview
planes, so the report can never disagree with result.json. matplotlib's PDF backend writes it (TrueType
fonts embedded, so the text can be searched and extracted); no further dependency.
"""

import datetime
import os
import textwrap

from . import preview

A4_INCHES = (8.27, 11.69)
WRAP = 95  # characters per line of body text at 8.5 pt on A4


def _series_lines(document):
    """Input files, and the DICOM series picked for each phase when the run recorded them."""
    lines = []
    series = document.get("series") or document.get("series_used") or []
    if isinstance(series, dict):
        series = [dict(phase=phase, **(value if isinstance(value, dict) else {"series": value}))
                  for phase, value in series.items()]
    for entry in series:
        if not isinstance(entry, dict):
            lines.append(str(entry))
            continue
        described = "{}: series {} \"{}\"".format(entry.get("phase", "?"), entry.get("series_number", "?"),
                                                 entry.get("description", ""))
        if entry.get("slices"):
            described += ", {} slices".format(entry["slices"])
        if entry.get("reason"):
            described += "; " + str(entry["reason"])
        if entry.get("series_instance_uid"):
            described += "; UID " + str(entry["series_instance_uid"])
        lines.append(described)
    for path in document.get("inputs", []):
        lines.append(("input: " if series else "") + str(path))
    if document.get("tumor_mask"):
        lines.append("tumor mask (replaces the predicted tumor): " + str(document["tumor_mask"]))
    return lines


def _measurement_rows(document):
    m = document["measurements"]
    return [
        ("Liver volume (tumor included)", "{:.0f} mL".format(m["liver_volume_ml"])),
        ("Liver parenchyma", "{:.0f} mL".format(m.get("liver_parenchyma_volume_ml", m["liver_volume_ml"]))),
        ("Tumor volume", "{:.1f} mL".format(m["tumor_volume_ml"])),
        ("Number of lesions", "{}".format(m["tumor_count"])),
        ("Largest axial diameter", "{:.1f} mm".format(m["largest_tumor_diameter_mm"])),
        ("Tumor burden (tumor / liver)", "{:.1f} %".format(m["tumor_burden_percent"])),
        ("Tumor outline from", str(document.get("tumor_source", "predicted"))),
        ("Liver outline from", str(document.get("liver_source", "predicted"))),
    ]


def _wrapped(text, width=WRAP):
    return textwrap.wrap(str(text), width) or [""]


def write_report(path, slices, document, when=None):
    """One-page PDF: header, the two preview planes, result and its meaning, measurements, model, inputs."""
    from matplotlib import rc_context

    when = when or datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    model = document["model"]
    figure = preview.new_figure(*A4_INCHES)
    figure.set_facecolor("white")
    page = figure.add_axes([0, 0, 1, 1])
    page.set_axis_off()

    def write(x, y, text, size=8.5, weight="normal", colour="black", **style):
        page.text(x, y, text, fontsize=size, fontweight=weight, color=colour, va="top", ha="left",
                  transform=page.transAxes, **style)

    write(0.06, 0.975, "TACE response prediction", size=16, weight="bold")
    write(0.06, 0.950, "Report generated {} by {} {}".format(
        when, document.get("software", {}).get("name", "tace-response"),
        document.get("software", {}).get("version", "")), size=8, colour="#444444")

    # the two planes, side by side, each scaled to its own aspect
    axial_shape, coronal_shape = slices.axial.ct.shape, slices.coronal.ct.shape
    grid = figure.add_gridspec(1, 2, left=0.06, right=0.94, bottom=0.60, top=0.91, wspace=0.04,
                               width_ratios=[axial_shape[1] / axial_shape[0], coronal_shape[1] / coronal_shape[0]])
    image_axes = [figure.add_subplot(grid[0, 0]), figure.add_subplot(grid[0, 1])]
    for axes in image_axes:
        axes.set_facecolor("black")
    preview.draw_slices(image_axes[0], image_axes[1], slices)
    for axes in image_axes:
        axes.title.set_color("black")
    write(0.06, 0.595, "Outlines: liver (yellow), tumor (red); + marks the centre of the {}. "
                       "CT window W{:.0f}/L{:.0f}. Patient's right on the image left.".format(
                           slices.centred_on, *preview.WINDOW_HU), size=7.5, colour="#444444")

    y = 0.565
    write(0.06, y, "Result", size=12, weight="bold")
    colour = "#1a7f37" if document["risk_category"] == "low" else "#b42318"
    write(0.06, y - 0.022, "Probability of objective response: {:.0%}".format(document["response_probability"]),
          size=11, weight="bold")
    write(0.06, y - 0.044, "Risk category: {} (cutoff {:.2f})".format(document["risk_category"].upper(),
                                                                       document["risk_cutoff"]),
          size=11, weight="bold", colour=colour)
    y -= 0.066
    for line in _wrapped("Meaning: " + document.get("risk_meaning", "")):
        write(0.06, y, line)
        y -= 0.015
    spread = document.get("fold_probability_spread")
    if spread is not None and len(document.get("fold_probabilities", [])) > 1:
        write(0.06, y, "Spread over the {} networks of the ensemble: {:.2f}".format(
            len(document["fold_probabilities"]), spread))
        y -= 0.015

    y -= 0.012
    write(0.06, y, "Measurements", size=12, weight="bold")
    y -= 0.024
    for name, value in _measurement_rows(document):
        write(0.08, y, name, size=9.5)
        write(0.50, y, value, size=9.5, weight="bold")
        y -= 0.017

    y -= 0.012
    write(0.06, y, "Model", size=12, weight="bold")
    y -= 0.022
    write(0.06, y, "{} {} (weights SHA-256 {})".format(model["name"], model["version"],
                                                       str(model.get("sha256", ""))[:16]), size=9)
    y -= 0.016
    for line in _wrapped("Intended use: " + str(model.get("intended_use", "not stated"))):
        write(0.06, y, line, weight="bold", colour="#b42318")
        y -= 0.015

    y -= 0.012
    write(0.06, y, "Input", size=12, weight="bold")
    y -= 0.022
    for entry in _series_lines(document)[:8]:
        for line in _wrapped(entry)[:2]:
            write(0.06, y, line, size=8, family="monospace")
            y -= 0.014

    warnings = document.get("warnings", [])
    if warnings and y > 0.08:
        y -= 0.010
        write(0.06, y, "Warnings ({})".format(len(warnings)), size=12, weight="bold")
        y -= 0.022
        for warning in warnings:
            for line in _wrapped("- " + warning):
                if y < 0.04:
                    break
                write(0.06, y, line)
                y -= 0.014

    with rc_context({"pdf.fonttype": 42}):
        figure.savefig(str(path), format="pdf", facecolor="white")
    return os.path.abspath(str(path))

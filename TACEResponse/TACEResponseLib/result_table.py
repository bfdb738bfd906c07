"""A prediction's result -> a table node (one row per quantity) and back.

Written for Python 3.9 (the Python bundled with Slicer 5.8). Imports ``slicer`` (MRML) and ``vtk`` only:
no Qt, no ``slicer.app`` / ``slicer.mrmlScene``; tested against slicer-core.
"""

import slicer
import vtk

from .i18n import _
from .scene_io import ATTR_RESULT, json_attribute, set_json_attribute, unique_name

RESULT_ROWS = (
    # key, label, unit
    ("response_probability", _("Response probability"), ""),
    ("risk_category", _("Risk category"), ""),
    ("risk_cutoff", _("Risk cutoff (probability)"), ""),
    ("risk_meaning", _("Risk meaning"), ""),
    ("liver_volume_ml", _("Liver volume (with tumor)"), "mL"),
    ("liver_parenchyma_volume_ml", _("Liver parenchyma volume"), "mL"),
    ("tumor_volume_ml", _("Tumor volume"), "mL"),
    ("tumor_count", _("Tumor count"), ""),
    ("largest_tumor_diameter_mm", _("Largest tumor diameter (axial)"), "mm"),
    ("tumor_burden_percent", _("Tumor burden"), "%"),
    ("tumor_source", _("Tumor source"), ""),
    ("liver_source", _("Liver source"), ""),
    ("tumor_edited", _("Tumor edited"), ""),
    ("liver_edited", _("Liver edited"), ""),
    ("measured_on", _("Measured on"), ""),
    ("model_name", _("Model"), ""),
    ("model_version", _("Model version"), ""),
    ("model_sha256", _("Model SHA-256"), ""),
    ("intended_use", _("Intended use"), ""),
    ("device", _("Device"), ""),
    ("fold_probabilities", _("Fold probabilities"), ""),
    ("warnings", _("Warnings"), ""),
    ("computed_at", _("Computed at"), ""),
    ("software", _("Software"), ""),
)


def result_values(result):
    """Flat {key: text} of a result document, for the table."""
    model = result.get("model", {})
    measured = result.get("measurements", {})
    software = result.get("software", {})
    values = {
        "response_probability": "{:.4f}".format(result["response_probability"]),
        "risk_category": result.get("risk_category", ""),
        "risk_cutoff": "{:.4f}".format(result["risk_cutoff"]) if "risk_cutoff" in result else "",
        "risk_meaning": result.get("risk_meaning", ""),
        "tumor_source": result.get("tumor_source", ""),
        "liver_source": result.get("liver_source", "predicted"),
        "tumor_edited": "yes" if result.get("tumor_edited") else "no",
        "liver_edited": "yes" if result.get("liver_edited") else "no",
        "measured_on": result.get("measured_on", ""),
        "model_name": model.get("name", ""),
        "model_version": model.get("version", ""),
        "model_sha256": model.get("sha256", ""),
        "intended_use": model.get("intended_use", ""),
        "device": result.get("device", ""),
        "fold_probabilities": ", ".join("{:.4f}".format(p) for p in result.get("fold_probabilities", [])),
        "warnings": "; ".join(result.get("warnings", [])),
        "computed_at": result.get("computed_at", ""),
        "software": "{} {}".format(software.get("name", "tace-response"), software.get("version", "")).strip(),
    }
    for key, value in measured.items():
        values[key] = str(value)
    return values


def fill_table(scene, result, table_node=None, name=None):
    """Write a result into a table node (one row per quantity: Measurement, Value, Unit, Key)."""
    if table_node is None:
        table_node = slicer.vtkMRMLTableNode()
        table_node.SetName(unique_name(scene, name or _("TACE response")))
        scene.AddNode(table_node)
    values = result_values(result)
    table = table_node.GetTable()
    table.Initialize()
    columns = []
    for title in ("Measurement", "Value", "Unit", "Key"):
        column = vtk.vtkStringArray()
        column.SetName(title)
        columns.append(column)
    for key, label, unit in RESULT_ROWS:
        if key not in values:
            continue
        for column, text in zip(columns, (label, values[key], unit, key)):
            column.InsertNextValue(str(text))
    for column in columns:
        table.AddColumn(column)
    table_node.SetUseColumnTitleAsColumnHeader(True)
    set_json_attribute(table_node, ATTR_RESULT, result)
    table_node.Modified()
    return table_node


def table_result(table_node):
    """The result document stored with a table node (None if the table was not made by this module)."""
    return json_attribute(table_node, ATTR_RESULT)


def table_values(table_node):
    """{key: text} as the table shows it (the Key column), e.g. after the user reopened a scene."""
    table = table_node.GetTable()
    key_column = table.GetColumnByName("Key")
    value_column = table.GetColumnByName("Value")
    if key_column is None or value_column is None:
        return {}
    return {key_column.GetValue(i): value_column.GetValue(i) for i in range(table.GetNumberOfRows())}

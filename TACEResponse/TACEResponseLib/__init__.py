"""TACE Response core library: imports without 3D Slicer.

Floors (each imports only from floors below): errors, image_io, preprocessing, network, model_package,
measurements -> predictor -> cli. The Slicer glue sits on top and is the only part that imports `slicer`:
- tested against slicer-core (MRML, no Qt): slicer_logic (Predict/Update on a scene) over scene_io, segments,
  result_table, command, model_choices, slicer_errors; environment and terminology (no MRML at all);
- inside Slicer only (Qt, the application): widget, widget_models, widget_runs, widget_results, module_logic,
  parameters, sample_data, self_test, i18n. The module file TACEResponse.py imports their classes by name.
"""

__version__ = "0.1.0"

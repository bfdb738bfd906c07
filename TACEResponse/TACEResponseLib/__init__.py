"""TACE Response core library: imports without 3D Slicer.

Floors (each imports only from floors below): errors, image_io, preprocessing, network, model_package,
measurements -> predictor -> cli. The Slicer glue (slicer_logic) sits on top and is the only part that
imports `slicer`.
"""

__version__ = "0.1.0"

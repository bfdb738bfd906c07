"""Synthetic abdominal CT phantoms with HCC lesions and TACE outcomes.

Each case is an axial CT-like volume (int16 HU) in one or more contrast
phases, a label map (0 background, 1 liver incl. vessels, 2 tumour) and an
outcome drawn from the documented model in :mod:`outcome`.

Design notes (why things are done this way):

* Anatomy lives in a *patient frame* (LPS axes, origin at the right
  diaphragm dome apex, shifted to scanner coordinates by a random offset).
  The image grid (spacing, flips, obliquity) is drawn independently, so it
  changes storage, never anatomy.
* Content is rendered as a uint8 tissue-class volume on an axis-aligned
  "render grid"; each phase is a lookup table of HU per class plus smooth
  textures.  Flipped grids are exact array flips of the render grid; oblique
  grids are resampled from it.  Noise and partial-volume blur are applied
  last, in storage index space, as the scanner would.
* Random streams are split (anatomy, grid, lesions, noise, outcome) so that
  e.g. size_scale or the list of phases does not change the anatomy or the
  outcome of a case.  Lesion features driving the outcome are measured on a
  grid tied to each lesion, independent of the image grid.

Layout (one stage per file): ``tissues`` (class ids, label and context maps), ``geometry`` (shapes),
``anatomy`` (the patient), ``lesions``, ``appearance`` (HU per structure and phase), ``render`` (the class
volume), ``acquisition`` (grid, partial volume, kernel, noise), ``outcome`` (the response and survival
model), ``case`` (one case) and ``cohort`` (a cohort on disk); apart from these, ``inserted_lesions`` paints
lesions into a real CT, for measuring tumor segmentation on real background. See docs/synthetic_cohort.md.
"""

from .acquisition import SLICE_SPACINGS
from .appearance import PHASE_ORDER
from .case import CaseResult, generate_case
from .cohort import CLINICAL_COLUMNS, GENERATOR_NAME, GENERATOR_VERSION, case_rng, generate_cohort
from .tissues import CONTEXT_NAMES

__all__ = ["CLINICAL_COLUMNS", "CONTEXT_NAMES", "GENERATOR_NAME", "GENERATOR_VERSION", "PHASE_ORDER", "SLICE_SPACINGS",
           "CaseResult", "case_rng", "generate_case", "generate_cohort"]

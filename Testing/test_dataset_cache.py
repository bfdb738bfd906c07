"""The preprocessed training cache: rebuilt when a case's files change, read on its own when they are gone."""

import shutil

import numpy as np
import SimpleITK as sitk

from TACEResponseLib import preprocessing
from TACEResponseTraining.config import load_config
from TACEResponseTraining.dataset import cache_path, load_case, read_dataset
from TACEResponseTraining.model_card import network_card
from TACEResponseTraining.phantoms import generate_cohort


def _spec():
    return preprocessing.PreprocessingSpec.from_card(network_card(load_config(None, spacing_mm=[6.0, 6.0, 6.0])))


def test_a_changed_image_is_preprocessed_again_and_a_missing_one_is_read_from_the_cache(tmp_path):
    generate_cohort(tmp_path / "cohort", 1, seed=3, size_scale=3.0)
    spec = _spec()
    record = read_dataset(tmp_path / "cohort", spec.phases)[0]
    cache = tmp_path / "cache"
    first = load_case(record, spec, 16, cache)
    assert cache_path(record, spec, cache, 16).is_file()

    # the same case id, new content (as a cohort regenerated into the same folder would have)
    image = sitk.ReadImage(record.images[0])
    sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32) + 200.0, record.images[0])
    changed = load_case(record, spec, 16, cache)
    assert not np.array_equal(changed.image, first.image)
    assert float(changed.image.astype(np.float32).mean()) > float(first.image.astype(np.float32).mean())

    # with the inputs gone, the cache (now holding the changed case) stands in for them
    shutil.rmtree(tmp_path / "cohort" / "images")
    assert not (tmp_path / "cohort" / "images").exists()
    again = load_case(record, spec, 16, cache)
    np.testing.assert_array_equal(again.image, changed.image)
    np.testing.assert_array_equal(again.label, changed.label)

"""Shared fixtures: paths to the real data in ../shared/data and small random-weights model packages."""

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
HCC_048 = SHARED_DATA / "hcc-tace-seg-HCC_048-portal-venous"
TOTALSEG = SHARED_DATA / "totalsegmentator-example"

# tests are small; more threads than cores only adds contention on CI machines
os.environ.setdefault("OMP_NUM_THREADS", "2")


def require(path):
    if not Path(path).exists():
        pytest.skip("real data not available: {} (it lives in ../shared/data beside the repo)".format(path))
    return Path(path)


def random_package(folder, phases=("portal_venous",), seed=0, cutoff=0.5):
    import torch
    from TACEResponseLib.model_package import build_network, write_package
    from TACEResponseTraining.config import load_config
    from TACEResponseTraining.model_card import full_card

    config = load_config()
    config["phases"] = list(phases)
    card = full_card(config, {"cutoff": cutoff}, "random-test", "0.0.0", "tests only", "none", "Apache-2.0")
    torch.manual_seed(seed)
    return write_package(folder, card, [build_network(card).state_dict()])


@pytest.fixture(scope="session")
def demo_with_localizer():
    """The bundled demo model, which has a coarse liver localiser."""
    from TACEResponseLib import model_package
    package = model_package.resolve("demo")
    if "localizer" not in package.card:
        pytest.skip("the bundled demo model has no localiser")
    return package


@pytest.fixture(scope="session")
def random_model(tmp_path_factory):
    return random_package(tmp_path_factory.mktemp("models") / "random")


def phantom_ct(size=(72, 64, 48), spacing=(2.5, 2.5, 3.0), origin=(-90.0, -80.0, -70.0), seed=0):
    """A small abdomen-like CT (HU): air, body ellipse, a 'liver' blob on the patient's right with a lesion."""
    rng = np.random.default_rng(seed)
    image = sitk.Image([int(s) for s in size], sitk.sitkInt16)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    index = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing="ij"), axis=-1).reshape(-1, 3)
    points = index * np.asarray(spacing) + np.asarray(origin)
    x, y, z = (points - points.mean(axis=0)).T
    hu = np.full(len(points), -1000.0)
    body = (x / 85.0) ** 2 + (y / 65.0) ** 2 <= 1.0
    hu[body] = 40.0
    liver = ((x + 35.0) / 40.0) ** 2 + ((y + 5.0) / 35.0) ** 2 + (z / 45.0) ** 2 <= 1.0
    hu[liver] = 110.0
    lesion = ((x + 40.0) ** 2 + (y + 5.0) ** 2 + (z - 5.0) ** 2) <= 12.0 ** 2
    hu[lesion] = 70.0
    hu += rng.normal(0, 8, len(hu))
    array = hu.reshape(size).transpose(2, 1, 0).astype(np.int16)  # x-fastest storage -> (z, y, x)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    labels = np.zeros(len(points), np.uint8)
    labels[liver] = 1
    labels[lesion & liver] = 2
    label_image = sitk.GetImageFromArray(labels.reshape(size).transpose(2, 1, 0).copy())
    label_image.CopyInformation(image)
    return out, label_image

"""`tace-response predict --liver-mask`: the user's liver replaces the predicted one in the labels, the
measurements and the response pathway's pooling; any geometry covering the image; clear errors."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import bad_inputs as bad
from conftest import phantom_ct
from TACEResponseLib import cli
from TACEResponseLib.network import LIVER, TUMOR, region_weights


def _run(argv, capfd):
    code = cli.main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def _predict(ct, out_dir, model, *extra):
    return ["predict", ct, "-o", out_dir, "--model", model.folder, "--device", "cpu", "--progress", "none"] + list(extra)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("liver_mask")
    ct, truth = phantom_ct()
    ct_path = str(folder / "ct.nrrd")
    sitk.WriteImage(ct, ct_path)
    # the true liver (tumor included) on another grid: 2 mm voxels, shifted origin, still covering the CT
    liver = sitk.Cast(sitk.NotEqual(truth, 0), sitk.sitkUInt8)
    other_grid = sitk.Image([100, 90, 80], sitk.sitkUInt8)
    other_grid.SetSpacing((2.0, 2.0, 2.0))
    other_grid.SetOrigin(tuple(np.asarray(ct.GetOrigin()) - 7.0))
    liver_other = sitk.Resample(liver, other_grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    liver_path = str(folder / "liver_2mm.nii.gz")
    sitk.WriteImage(liver_other, liver_path)
    # a smaller liver: the true one eroded, on the CT grid
    small = sitk.BinaryErode(liver, [4, 4, 2])
    small_path = str(folder / "liver_small.nrrd")
    sitk.WriteImage(small, small_path)
    return folder, ct_path, liver_path, small_path, liver


def _result(out_dir):
    with open(str(out_dir / cli.RESULT_NAME), encoding="utf-8") as stream:
        return json.load(stream)


def test_liver_mask_replaces_the_predicted_liver(case, random_model, tmp_path, capfd):
    folder, ct_path, liver_path, small_path, liver = case
    code, _, err = _run(_predict(ct_path, tmp_path / "plain", random_model), capfd)
    assert code == 0, err
    code, _, err = _run(_predict(ct_path, tmp_path / "given", random_model, "--liver-mask", liver_path), capfd)
    assert code == 0, err
    code, _, err = _run(_predict(ct_path, tmp_path / "small", random_model, "--liver-mask", small_path), capfd)
    assert code == 0, err
    plain, given, small = (_result(tmp_path / name) for name in ("plain", "given", "small"))
    assert plain["liver_source"] == "predicted" and plain["liver_mask"] is None
    assert given["liver_source"] == "user mask" and given["liver_mask"].endswith("liver_2mm.nii.gz")
    assert any(liver_path in w and "liver mask geometry differs" in w for w in given["warnings"]), given["warnings"]
    # the labels: liver or tumor inside the given liver, nothing of the predicted liver beyond it
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "given" / cli.SEGMENTATION_NAME)))
    reference = sitk.ReadImage(ct_path)
    on_ct = sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(liver_path), reference, sitk.Transform(),
                                                 sitk.sitkNearestNeighbor, 0)) > 0
    assert np.array_equal(labels == 1, on_ct & (labels != 2))
    voxel_ml = float(np.prod(reference.GetSpacing())) / 1000.0
    assert given["measurements"]["liver_volume_ml"] == pytest.approx(np.count_nonzero(on_ct | (labels == 2)) * voxel_ml,
                                                                     abs=0.01)
    # the response pathway pooled with the given liver: each liver gives its own response
    probabilities = {given["response_probability"], small["response_probability"], plain["response_probability"]}
    assert len(probabilities) == 3, probabilities
    assert small["measurements"]["liver_volume_ml"] < given["measurements"]["liver_volume_ml"]


def test_liver_and_tumor_masks_together(case, random_model, tmp_path, capfd):
    folder, ct_path, liver_path, small_path, liver = case
    tumor = np.zeros(sitk.GetArrayFromImage(liver).shape, np.uint8)
    tumor[20:26, 28:36, 20:28] = 1
    tumor_image = sitk.GetImageFromArray(tumor)
    tumor_image.CopyInformation(liver)
    tumor_path = str(tmp_path / "tumor.nrrd")
    sitk.WriteImage(tumor_image, tumor_path)
    code, _, err = _run(_predict(ct_path, tmp_path / "out", random_model, "--liver-mask", small_path,
                                 "--tumor-mask", tumor_path), capfd)
    assert code == 0, err
    result = _result(tmp_path / "out")
    assert (result["liver_source"], result["tumor_source"]) == ("user mask", "user mask")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / cli.SEGMENTATION_NAME)))
    small = sitk.GetArrayFromImage(sitk.ReadImage(small_path)) > 0
    assert np.array_equal(labels == 2, tumor > 0)
    assert np.array_equal(labels == 1, small & (tumor == 0))


@pytest.mark.parametrize("builder, fragment", [(bad.image_2d, "2D image"), (bad.missing_file, "does not exist")],
                         ids=["2d-mask", "missing-mask"])
def test_bad_liver_mask_is_named(builder, fragment, random_model, tmp_path, capfd):
    ct = bad.good_ct(tmp_path)
    mask = builder(tmp_path)
    out_dir = tmp_path / "out"
    code, _, err = _run(_predict(ct, out_dir, random_model, "--liver-mask", mask), capfd)
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and mask in lines[0] and fragment in lines[0], err
    assert "Traceback" not in err and not out_dir.exists()


def test_empty_liver_mask_warns(random_model, tmp_path, capfd):
    ct = bad.good_ct(tmp_path)
    mask = bad.empty_mask(tmp_path)
    code, _, err = _run(_predict(ct, tmp_path / "out", random_model, "--liver-mask", mask), capfd)
    assert code == 0, err
    result = _result(tmp_path / "out")
    assert result["liver_source"] == "user mask"
    assert any(mask in w and "liver mask is empty" in w for w in result["warnings"]), result["warnings"]
    assert result["measurements"]["liver_parenchyma_volume_ml"] == 0


def test_region_weights_with_a_liver_mask():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 5, 6)
    probs = torch.softmax(logits, dim=1)
    liver_mask = (torch.rand(1, 1, 4, 5, 6) > 0.5).float()
    tumor_mask = (torch.rand(1, 1, 4, 5, 6) > 0.8).float()
    liver, tumor = region_weights(logits, liver_mask=liver_mask)
    assert torch.allclose(tumor, probs[:, TUMOR:TUMOR + 1])
    assert torch.allclose(liver, liver_mask * (1.0 - probs[:, TUMOR:TUMOR + 1]))
    liver, tumor = region_weights(logits, tumor_mask, liver_mask)
    assert torch.equal(tumor, tumor_mask) and torch.equal(liver, liver_mask * (1.0 - tumor_mask))
    # unchanged without a liver mask
    liver, tumor = region_weights(logits, tumor_mask)
    assert torch.allclose(liver, (probs[:, LIVER:LIVER + 1] + probs[:, TUMOR:TUMOR + 1]) * (1.0 - tumor_mask))

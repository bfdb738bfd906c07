"""synth -> train a few steps -> export -> predict through the CLI, all on CPU at tiny scale."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from safetensors.torch import load_file

from TACEResponseLib import cli
from TACEResponseLib.model_package import load_package
from TACEResponseTraining.config import load_config
from TACEResponseTraining.export import export_run
from TACEResponseTraining.phantoms import generate_cohort
from TACEResponseTraining.train import train

QUIET = {"log": lambda *args: None}


def tiny_config(**overrides):
    config = load_config(patch_size=[32, 32, 32], batch_size=2, steps_per_epoch=1, validation_cases_per_epoch=1,
                         head_refit_epochs=20, validation_fraction=0.25, channels=[4, 8, 16, 32])
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort") / "synth"
    generate_cohort(folder, 4, seed=11, size_scale=3.0)
    return folder


@pytest.fixture(scope="module")
def trained(cohort, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    train(cohort, run_dir, tiny_config(max_steps=3), device="cpu", **QUIET)
    model_dir = run_dir.parent / "model"
    export_run(run_dir, model_dir, name="tiny", reproduce="pytest")
    return run_dir, model_dir


def test_training_writes_history_checkpoint_and_run(trained):
    run_dir, _ = trained
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2, 3]
    assert all(np.isfinite(h["seg_loss"]) for h in history)
    assert "liver_dice" in history[-1]["val"]
    run = json.loads((run_dir / "run.json").read_text())
    assert 0.0 <= run["cutoff"] <= 1.0
    assert (run_dir / "checkpoint" / "model.safetensors").is_file()


def test_resume_continues_exactly(cohort, trained, tmp_path):
    """Interrupted after two steps and resumed: the same weights as three steps straight."""
    straight, _ = trained
    resumed = tmp_path / "resumed"
    config = tiny_config(max_steps=3)
    assert train(cohort, resumed, config, device="cpu", cache_dir=straight / "cache", stop_after_steps=2,
                 **QUIET) is None
    train(cohort, resumed, config, resume=True, device="cpu", cache_dir=straight / "cache", **QUIET)
    a = load_file(str(straight / "checkpoint" / "model.safetensors"))
    b = load_file(str(resumed / "checkpoint" / "model.safetensors"))
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=0, atol=1e-6, err_msg=key)


def test_exported_package_predicts_through_the_cli(cohort, trained, tmp_path, capsys):
    _, model_dir = trained
    package = load_package(model_dir)
    assert package.card["risk"]["cutoff"] == json.loads((trained[0] / "run.json").read_text())["cutoff"]
    assert package.card["reproduce"] == "pytest"
    image_path = str(cohort / "images" / "synth_0000_portal_venous.nii.gz")
    out = tmp_path / "out"
    code = cli.main(["predict", image_path, "-o", str(out), "--model", str(model_dir), "--progress", "jsonl",
                     "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["stage"] == "result" and all(0.0 <= l["progress"] <= 1.0 for l in lines)
    result = json.loads((out / "result.json").read_text())
    assert 0.0 <= result["response_probability"] <= 1.0
    assert result["risk_category"] == ("low" if result["response_probability"] >= result["risk_cutoff"] else "high")
    assert result["model"] == {"name": "tiny", "version": "0.1.0", "sha256": package.sha256,
                               "intended_use": package.card["intended_use"]}
    assert set(result["measurements"]) >= {"liver_volume_ml", "tumor_volume_ml", "tumor_count",
                                           "largest_tumor_diameter_mm", "tumor_burden_percent"}
    assert result["device"] == "cpu" and "network" in result["timings_s"]
    segmentation = sitk.ReadImage(str(out / "segmentation.nii.gz"))
    source = sitk.ReadImage(image_path)
    assert segmentation.GetSize() == source.GetSize()
    assert segmentation.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_allclose(segmentation.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(segmentation.GetSpacing(), source.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(segmentation.GetDirection(), source.GetDirection(), atol=1e-5)
    assert set(np.unique(sitk.GetArrayFromImage(segmentation))) <= {0, 1, 2}


def test_tumor_mask_replaces_predicted_tumor(cohort, trained, tmp_path, capsys):
    _, model_dir = trained
    image_path = str(cohort / "images" / "synth_0001_portal_venous.nii.gz")
    truth = sitk.ReadImage(str(cohort / "labels" / "synth_0001.nii.gz"))
    mask = sitk.Cast(truth == 2, sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(mask).any():  # a lesion-free case: draw one
        array = sitk.GetArrayFromImage(mask)
        centre = np.array(array.shape) // 2
        array[tuple(slice(c - 3, c + 3) for c in centre)] = 1
        mask = sitk.GetImageFromArray(array)
        mask.CopyInformation(truth)
    mask_path = tmp_path / "tumor.nrrd"
    sitk.WriteImage(mask, str(mask_path))
    runs = {}
    for name, extra in (("predicted", []), ("edited", ["--tumor-mask", str(mask_path)])):
        out = tmp_path / name
        assert cli.main(["predict", image_path, "-o", str(out), "--model", str(model_dir), "--progress", "none"]
                        + extra) == 0
        runs[name] = json.loads((out / "result.json").read_text())
        runs[name]["labels_array"] = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "segmentation.nii.gz")))
    capsys.readouterr()
    edited = runs["edited"]
    assert edited["tumor_source"] == "user mask"
    voxel_ml = float(np.prod(mask.GetSpacing())) / 1000.0
    assert edited["measurements"]["tumor_volume_ml"] == pytest.approx(
        sitk.GetArrayViewFromImage(mask).sum() * voxel_ml, abs=0.02)
    np.testing.assert_array_equal(edited["labels_array"] == 2, sitk.GetArrayViewFromImage(mask) > 0)
    assert edited["response_probability"] != runs["predicted"]["response_probability"]


def test_refit_through_the_predictor_changes_only_the_response_pathway(cohort, trained, tmp_path):
    from TACEResponseTraining.refit import refit_run

    run_dir, _ = trained
    out = tmp_path / "refit"
    run = refit_run(run_dir, cohort, out, localizer_dir=run_dir, log=lambda *a: None)
    assert "localiser yes" in run["head_refit"]["statistics"]
    assert 0.0 <= run["cutoff"] <= 1.0 and "refitted through the Predictor" in run["cutoff_method"]
    before, after = load_file(str(run_dir / "final.safetensors")), load_file(str(out / "final.safetensors"))
    assert before.keys() == after.keys()
    for key in before:
        if not key.startswith("head"):  # head.*, head_input_mean, head_input_scale: the response pathway
            assert np.array_equal(before[key].numpy(), after[key].numpy()), key
    package = export_run(out, tmp_path / "model", name="refit", localizer_dir=run_dir)
    assert package.card["risk"]["cutoff"] == pytest.approx(run["cutoff"])
    with pytest.raises(Exception, match="not empty"):
        refit_run(run_dir, cohort, out, localizer_dir=run_dir)


def test_refit_gives_an_older_run_the_new_response_pathway(cohort, trained, tmp_path):
    """A run trained with a hidden-layer pathway and no intensity statistics gets the logistic pathway with
    lesion-to-liver contrasts; the encoder and decoders are untouched and the package predicts."""
    from TACEResponseTraining.refit import refit_run

    _, model_dir = trained
    old = tmp_path / "old"
    train(cohort, old, tiny_config(max_steps=2, head_hidden=32, intensity_bins=0), device="cpu",
          cache_dir=trained[0] / "cache", **QUIET)
    out = tmp_path / "new"
    run = refit_run(old, cohort, out, intensity_bins=26, head_hidden=0, log=lambda *a: None)
    assert run["config"]["intensity_bins"] == 26 and run["config"]["head_hidden"] == 0
    assert run["head_refit"]["new_response_pathway"] is True
    before, after = load_file(str(old / "final.safetensors")), load_file(str(out / "final.safetensors"))
    assert after["head.weight"].shape[1] == before["head.0.weight"].shape[1] + 3
    assert float(after["head_input_scale"].min()) > 0 and not bool((after["head_input_scale"] == 1).all())
    for key in before:
        if not key.startswith("head"):
            assert np.array_equal(before[key].numpy(), after[key].numpy()), key
    package = export_run(out, tmp_path / "model", name="new")
    assert package.card["network"]["intensity_bins"] == 26 and package.card["network"]["head_hidden"] == 0
    image = next((cohort / "images").glob("*.nii.gz"))
    assert cli.main(["predict", str(image), "-o", str(tmp_path / "pred"), "--model", str(tmp_path / "model")]) == 0
    result = json.loads((tmp_path / "pred" / "result.json").read_text())
    assert 0.0 <= result["response_probability"] <= 1.0


def test_fine_tuning_starts_from_the_given_weights_and_records_them(cohort, trained, tmp_path):
    """With a learning rate of zero a fine-tuned run keeps the weights it started from exactly (a fresh run
    keeps its seeded initialisation instead); the start's SHA-256 goes into the run's configuration."""
    import hashlib

    from TACEResponseLib.errors import InputError

    run_dir, _ = trained
    start = run_dir / "final.safetensors"
    still = tiny_config(max_steps=1, learning_rate=0.0)
    tuned, fresh = tmp_path / "tuned", tmp_path / "fresh"
    train(cohort, tuned, still, device="cpu", cache_dir=run_dir / "cache", init_weights=start, **QUIET)
    train(cohort, fresh, still, device="cpu", cache_dir=run_dir / "cache", **QUIET)
    before = load_file(str(start))
    tuned_w = load_file(str(tuned / "checkpoint" / "model.safetensors"))
    fresh_w = load_file(str(fresh / "checkpoint" / "model.safetensors"))
    encoder = [key for key in before if not key.startswith("head")]
    assert all(np.array_equal(before[key].numpy(), tuned_w[key].numpy()) for key in encoder)
    assert not all(np.array_equal(before[key].numpy(), fresh_w[key].numpy()) for key in encoder)
    recorded = json.loads((tuned / "config.json").read_text())["init_weights"]
    assert recorded == {"file": "final.safetensors", "sha256": hashlib.sha256(start.read_bytes()).hexdigest()}

    with pytest.raises(InputError, match="do not fit the training configuration"):
        train(cohort, tmp_path / "wider", tiny_config(max_steps=1, channels=[8, 16, 32, 64]), device="cpu",
              cache_dir=run_dir / "cache", init_weights=start, **QUIET)
    assert not (tmp_path / "wider").exists()  # refused before anything was written
    with pytest.raises(InputError, match="initial weights not found"):
        train(cohort, tmp_path / "nothing", still, device="cpu", init_weights=tmp_path / "absent.safetensors",
              **QUIET)


def test_a_model_packages_localizer_is_reused_by_export(trained, tmp_path):
    """A package's localiser goes into a new package unchanged (weights and card entry), so fine-tuned main
    networks keep the localiser they were released with; a package without one is refused by name."""
    from TACEResponseLib.errors import InputError

    run_dir, model_dir = trained
    first = export_run(run_dir, tmp_path / "first", name="first", localizer_dir=run_dir)
    second = export_run(run_dir, tmp_path / "second", name="second", localizer_dir=first.folder)
    a = load_file(str(first.folder / first.card["localizer"]["file"]))
    b = load_file(str(second.folder / second.card["localizer"]["file"]))
    assert a.keys() == b.keys() and all(np.array_equal(a[key].numpy(), b[key].numpy()) for key in a)
    assert second.card["localizer"] == first.card["localizer"]
    with pytest.raises(InputError, match="has no localizer"):
        export_run(run_dir, tmp_path / "third", localizer_dir=model_dir)

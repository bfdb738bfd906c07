"""`tace-response batch`: a cohort of 6 small CTs, one of them a truncated file.

- local run with 2 worker processes, killed (SIGKILL to the whole process group) once two cases are done,
  then `--resume`: every good case done exactly once (finished results are not touched again), the broken
  one recorded as failed with its one-line error, and each worker process built its Predictor once;
- a Dask LocalCluster (2 worker processes) gives the same summary as the local run;
- a folder of cases as input, `--resume` with nothing left to do, and refusals of bad batch input.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import SimpleITK as sitk

from conftest import phantom_ct
from TACEResponseLib import batch, cli

GOOD = ["case0", "case1", "case2", "case3", "case4"]
BROKEN = "broken"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TACE_RESPONSE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """cases.csv (relative paths, the dataset format) and the images: 5 small phantoms, one stored flipped,
    one saved as NIfTI, and a NRRD cut in half."""
    root = tmp_path_factory.mktemp("cohort")
    (root / "images").mkdir()
    rows = []
    for number, case_id in enumerate(GOOD):
        ct, _ = phantom_ct(size=(56, 48, 36), seed=number)
        if number == 1:
            ct = sitk.Flip(ct, [True, False, True])
        name = "images/{}.{}".format(case_id, "nii.gz" if number == 2 else "nrrd")
        sitk.WriteImage(ct, str(root / name))
        rows.append({"case_id": case_id, "image_portal_venous": name, "response": ""})
    data = (root / "images" / "case0.nrrd").read_bytes()
    (root / "images" / "broken.nrrd").write_bytes(data[: len(data) // 2])
    rows.insert(3, {"case_id": BROKEN, "image_portal_venous": "images/broken.nrrd", "response": ""})
    with open(str(root / "cases.csv"), "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["case_id", "image_portal_venous", "response"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def read_summary(out_dir):
    with open(str(Path(out_dir) / batch.SUMMARY_NAME), newline="") as stream:
        return {row["case_id"]: row for row in csv.DictReader(stream)}


def _finished(out_dir):
    return [c for c in GOOD + [BROKEN] if batch.finished_result(str(out_dir / c)) is not None]


def _batch_argv(cohort, out_dir, model, *extra):
    return ["batch", str(cohort / "cases.csv"), "-o", str(out_dir), "--model", str(model.folder), "--device", "cpu",
            "--progress", "none"] + list(extra)


@pytest.fixture(scope="module")
def local_run(cohort, random_model, tmp_path_factory):
    """The interrupted and resumed local run: (out_dir, mtimes of the results finished before the kill)."""
    out_dir = tmp_path_factory.mktemp("local") / "out"
    env = dict(os.environ, TACE_RESPONSE_CACHE=str(out_dir.parent / "cache"))
    process = subprocess.Popen([sys.executable, "-m", "TACEResponseLib"] + _batch_argv(
        cohort, out_dir, random_model, "--workers", "2"), start_new_session=True, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while len(_finished(out_dir)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the batch and its worker processes, mid-run
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, "batch ended before it was interrupted: {}".format(stderr)
    done_before = {c: os.stat(str(out_dir / c / cli.RESULT_NAME)).st_mtime_ns for c in _finished(out_dir)}
    assert 2 <= len(done_before) < len(GOOD), "interruption left {} finished".format(sorted(done_before))
    partial = read_summary(out_dir)  # written when the batch started: every case listed, none lost
    assert sorted(partial) == sorted(GOOD + [BROKEN])

    code = cli.main(_batch_argv(cohort, out_dir, random_model, "--workers", "2", "--resume"))
    assert code == 4  # finished, one case failed
    return out_dir, done_before


def test_resume_runs_each_good_case_once_and_records_the_broken_one(local_run, cohort):
    out_dir, done_before = local_run
    summary = read_summary(out_dir)
    assert list(summary) == ["case0", "case1", "case2", BROKEN, "case3", "case4"]  # the table's order
    assert {c: summary[c]["status"] for c in GOOD} == dict.fromkeys(GOOD, "ok")
    broken = summary[BROKEN]
    assert broken["status"] == "failed"
    assert str(cohort / "images" / "broken.nrrd") in broken["error"] and "truncated" in broken["error"]
    assert broken["response_probability"] == ""
    # cases finished before the kill were not run again
    for case_id, mtime in done_before.items():
        assert os.stat(str(out_dir / case_id / cli.RESULT_NAME)).st_mtime_ns == mtime, case_id
    for case_id in GOOD:
        result = json.loads((out_dir / case_id / cli.RESULT_NAME).read_text())
        row = summary[case_id]
        assert float(row["response_probability"]) == result["response_probability"]
        assert row["risk_category"] == result["risk_category"]
        assert float(row["liver_volume_ml"]) == result["measurements"]["liver_volume_ml"]
        assert row["inputs"] == ";".join(result["inputs"])
        # no staging folder left; the kill may have come between a case's result.json and its batch.json
        expected = {cli.RESULT_NAME, cli.SEGMENTATION_NAME, batch.CASE_RECORD_NAME}
        names = set(os.listdir(str(out_dir / case_id)))
        assert names == expected or (case_id in done_before and names == expected - {batch.CASE_RECORD_NAME}), names
    assert not (out_dir / BROKEN / cli.RESULT_NAME).exists()


def test_each_worker_process_loaded_the_model_once(local_run):
    out_dir, done_before = local_run
    loads = defaultdict(set)
    for case_id in set(GOOD) - set(done_before):
        record = json.loads((out_dir / case_id / batch.CASE_RECORD_NAME).read_text())
        loads[record["worker"]].add(record["predictor_loads"])
    assert 1 <= len(loads) <= 2, loads  # the resumed run's two workers
    assert all(counts == {1} for counts in loads.values()), loads


def test_resume_again_retries_only_the_failed_case(local_run, cohort, random_model, capfd):
    out_dir, _ = local_run
    mtimes = {c: os.stat(str(out_dir / c / cli.RESULT_NAME)).st_mtime_ns for c in GOOD}
    summary_before = read_summary(out_dir)
    # the broken case is retried (it is not finished) and fails again; the others are untouched
    assert cli.main(_batch_argv(cohort, out_dir, random_model, "--resume")) == 4
    assert {c: os.stat(str(out_dir / c / cli.RESULT_NAME)).st_mtime_ns for c in GOOD} == mtimes
    assert read_summary(out_dir).keys() == summary_before.keys()
    assert "1 to run, 5 finished before" in capfd.readouterr().err


def test_existing_results_need_resume_or_overwrite(local_run, cohort, random_model, capfd):
    out_dir, _ = local_run
    assert cli.main(_batch_argv(cohort, out_dir, random_model)) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "--overwrite" in err


def test_dask_local_cluster_gives_the_same_summary(local_run, cohort, random_model, tmp_path):
    distributed = pytest.importorskip("distributed")
    out_dir = tmp_path / "dask"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        code = cli.main(_batch_argv(cohort, out_dir, random_model, "--executor", "dask",
                                    "--scheduler", cluster.scheduler_address))
    assert code == 4
    local, dask = read_summary(local_run[0]), read_summary(out_dir)
    assert list(dask) == list(local)
    compared = ("status", "response_probability", "risk_category", "liver_volume_ml", "tumor_volume_ml",
                "tumor_count", "largest_tumor_diameter_mm", "warnings", "inputs", "model")
    for case_id in local:
        assert {k: dask[case_id][k] for k in compared} == {k: local[case_id][k] for k in compared}, case_id
    assert dask[BROKEN]["error"] == local[BROKEN]["error"]
    workers = {json.loads((out_dir / c / batch.CASE_RECORD_NAME).read_text())["worker"] for c in GOOD}
    assert len(workers) <= 2


def test_ctrl_c_stops_the_batch_with_a_summary_and_a_hint(cohort, random_model, tmp_path):
    out_dir = tmp_path / "out"
    env = dict(os.environ, TACE_RESPONSE_CACHE=str(tmp_path / "cache"))
    # SIGINT as a terminal's Ctrl-C sends it: to the whole process group, workers included
    process = subprocess.Popen([sys.executable, "-m", "TACEResponseLib"] + _batch_argv(
        cohort, out_dir, random_model, "--workers", "2"), start_new_session=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
    deadline = time.monotonic() + 600
    while not _finished(out_dir) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "continue with --resume" in stderr and "error: interrupted" in stderr
    statuses = {c: row["status"] for c, row in read_summary(out_dir).items()}
    assert "pending" in statuses.values() and "ok" in statuses.values(), statuses
    for case_id, status in statuses.items():
        case_dir = out_dir / case_id
        assert (batch.finished_result(str(case_dir)) is not None) == (status == "ok"), case_id
        if case_dir.is_dir():  # an interrupted case leaves no staging folder
            assert not [n for n in os.listdir(str(case_dir)) if n.startswith(".")], os.listdir(str(case_dir))


def test_folder_of_cases(cohort, random_model, tmp_path, capfd):
    """One case per file; the output folder inside the input folder and non-image files are not cases."""
    folder = tmp_path / "studies"
    folder.mkdir()
    for case_id in ("case0", "case1"):
        (folder / (case_id + ".nrrd")).write_bytes((cohort / "images" / (case_id + ".nrrd")).read_bytes())
    (folder / "notes.txt").write_text("not a case")
    out_dir = folder / "results"
    code = cli.main(["batch", str(folder), "-o", str(out_dir), "--model", str(random_model.folder),
                     "--device", "cpu", "--progress", "none"])
    assert code == 0, capfd.readouterr().err
    summary = read_summary(out_dir)
    assert {c: r["status"] for c, r in summary.items()} == {"case0": "ok", "case1": "ok"}
    assert capfd.readouterr().out.startswith("2 ok, 0 failed of 2 case(s)")
    assert cli.main(["batch", str(folder), "-o", str(out_dir), "--model", str(random_model.folder),
                     "--device", "cpu", "--progress", "none", "--resume"]) == 0
    assert "0 to run, 2 finished before" in capfd.readouterr().err


def test_mask_columns_reach_predict_and_an_empty_image_cell_fails_that_case_only(cohort, random_model, tmp_path,
                                                                                  capfd):
    _, labels = phantom_ct(size=(56, 48, 36), seed=0)
    sitk.WriteImage(sitk.Cast(labels == 2, sitk.sitkUInt8), str(tmp_path / "tumor.nrrd"))
    table = tmp_path / "cases.csv"
    table.write_text("case_id,image_portal_venous,tumor_mask\ngood,{},tumor.nrrd\nmissing,,\n".format(
        cohort / "images" / "case0.nrrd"))
    out_dir = tmp_path / "out"
    assert cli.main(["batch", str(table), "-o", str(out_dir), "--model", str(random_model.folder),
                     "--device", "cpu", "--progress", "none"]) == 4
    summary = read_summary(out_dir)
    assert summary["good"]["status"] == "ok"
    result = json.loads((out_dir / "good" / cli.RESULT_NAME).read_text())
    assert result["tumor_source"] == "user mask" and result["tumor_mask"] == str(tmp_path / "tumor.nrrd")
    assert result["measurements"]["tumor_count"] == 1
    assert summary["missing"]["status"] == "failed"
    assert summary["missing"]["error"] == "no image given in column image_portal_venous"


def test_unreachable_dask_scheduler_is_one_line_and_writes_nothing(cohort, random_model, tmp_path, capfd):
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out_dir = tmp_path / "out"
    code = cli.main(_batch_argv(cohort, out_dir, random_model, "--executor", "dask",
                                "--scheduler", "tcp://127.0.0.1:{}".format(port)))
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot reach the Dask scheduler" in err, err
    assert not out_dir.exists()


@pytest.mark.parametrize("table, fragment", [
    ("case_id,image_arterial\na,x.nrrd\n", "missing column(s) image_portal_venous"),
    ("case_id,image_portal_venous\na,x.nrrd\na,y.nrrd\n", "appears twice"),
    ("case_id,image_portal_venous\n../up,x.nrrd\n", "cannot be a folder name"),
    ("case_id,image_portal_venous\n", "no rows"),
], ids=["missing-phase-column", "duplicate-case", "case-id-escapes", "empty-table"])
def test_bad_case_table_is_one_line(table, fragment, random_model, tmp_path, capfd):
    path = tmp_path / "cases.csv"
    path.write_text(table)
    out_dir = tmp_path / "out"
    code = cli.main(["batch", str(path), "-o", str(out_dir), "--model", str(random_model.folder), "--progress", "none"])
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and fragment in err and str(path) in err, err
    assert not out_dir.exists()

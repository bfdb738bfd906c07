"""`tace-response pacs`: retrieve a study from a PACS, predict, store the DICOM SEG and SR back into that study.

Two transports, one flow: DICOMweb (QIDO-RS, WADO-RS, STOW-RS through dicomweb-client) with ``--url``, or
DIMSE (C-FIND, C-GET, C-STORE through pynetdicom) with ``--aet/--host/--port``. The CT series of the study
(earlier SEG/SR objects are not fetched) go to OUTDIR/study/, `predict --dicom` runs on that folder, and only
when segmentation.dcm and report.dcm are both written is anything stored: a failed run stores nothing. After
storing, a query of the study confirms both objects are there. A server that is down, refuses or fails gives
one line (exit code 2); a store where only the first object went in says exactly that.
"""

import json
import os
import shutil
import tempfile

from .errors import InputError, TACEResponseError

STUDY_FOLDER = "study"
DEFAULT_CALLING_AET = "TACERESPONSE"
CT_MODALITIES = ("CT",)


class PacsError(TACEResponseError):
    """The PACS is unreachable, refuses, or fails a request (exit code 2, like other bad input)."""

    exit_code = 2


def add_parser(sub):
    pacs = sub.add_parser("pacs", help="retrieve a study from a PACS, predict, store DICOM SEG and SR back")
    where = pacs.add_argument_group("PACS (DICOMweb: --url; DIMSE: --aet, --host, --port)")
    where.add_argument("--url", default=None, metavar="URL", help="DICOMweb root, e.g. http://pacs:8042/dicom-web")
    where.add_argument("--aet", default=None, metavar="AE_TITLE", help="the PACS' AE title (DIMSE)")
    where.add_argument("--host", default=None, metavar="HOST", help="the PACS' host name or address (DIMSE)")
    where.add_argument("--port", default=None, type=int, metavar="PORT", help="the PACS' DICOM port (DIMSE)")
    where.add_argument("--calling-aet", default=DEFAULT_CALLING_AET, metavar="AE_TITLE",
                       help="our own AE title (DIMSE; the PACS must know it; default %(default)s)")
    where.add_argument("--timeout", default=60.0, type=float, metavar="SECONDS", help="network timeout")
    pacs.add_argument("--study", required=True, metavar="StudyInstanceUID", help="the study to process")
    pacs.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                      help="folder for the retrieved study/, the results and the DICOM SEG and SR")
    pacs.add_argument("--model", default=None, metavar="NAME|PATH", help="registry name or package folder/.zip")
    pacs.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    pacs.add_argument("--series", action="append", default=[], metavar="PHASE=SeriesInstanceUID",
                      help="use this series for PHASE (repeatable), when the study's series are ambiguous")
    pacs.add_argument("--progress", choices=["bar", "jsonl", "none"], default=None)
    pacs.add_argument("--overwrite", action="store_true", help="replace existing results in OUTDIR")
    pacs.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    return pacs


def _connection(args):
    """A DicomWeb or Dimse connection for the options given; usage errors as one line."""
    dimse_options = [args.aet, args.host, args.port]
    if args.url and any(o is not None for o in dimse_options):
        raise InputError(None, "tace-response pacs: give either --url (DICOMweb) or --aet/--host/--port (DIMSE)")
    if args.url:
        return DicomWeb(args.url, args.timeout)
    if any(o is None for o in dimse_options):
        raise InputError(None, "tace-response pacs: give --url URL (DICOMweb) or all of --aet, --host and --port "
                               "(DIMSE)")
    if not 0 < args.port < 65536:
        raise InputError(None, "tace-response pacs: --port {} is not a TCP port".format(args.port))
    return Dimse(args.aet, args.host, args.port, args.calling_aet, args.timeout)


def _save(ds, path):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        ds.file_meta = meta = meta or FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    try:
        ds.save_as(path, enforce_file_format=True)  # pydicom >= 3
    except TypeError:
        ds.save_as(path, write_like_original=False)


# ---- DICOMweb ---------------------------------------------------------------------------------------------


class DicomWeb:
    def __init__(self, url, timeout):
        import importlib.util

        if importlib.util.find_spec("dicomweb_client") is None:
            raise InputError(None, "--url needs dicomweb-client: pip install \"tace-response[dicom]\"")
        from dicomweb_client.api import DICOMwebClient

        self.where = url.rstrip("/")
        self.client = DICOMwebClient(self.where, timeout=timeout)
        # its default (5 tries, exponential waits) also retries a refused connection, for half a minute
        self.client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=500)

    def _call(self, what, call):
        import requests

        try:
            return call()
        except requests.exceptions.ConnectionError:
            raise PacsError("{}: cannot reach the DICOMweb server ({}; is it running and the URL right?)".format(
                self.where, what)) from None
        except requests.exceptions.Timeout:
            raise PacsError("{}: no answer in time ({})".format(self.where, what)) from None
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise PacsError("{}: {} failed (HTTP {})".format(self.where, what, status)) from None
        except requests.exceptions.RequestException as exc:
            raise PacsError("{}: {} failed ({})".format(self.where, what, str(exc).splitlines()[0][:200])) from None

    def series(self, study_uid):
        """[(SeriesInstanceUID, Modality)] of the study; PacsError when the study is unknown."""
        from pydicom.dataset import Dataset

        found = self._call("searching the study", lambda: self.client.search_for_series(
            study_instance_uid=study_uid, fields=["Modality", "SeriesInstanceUID"], get_remaining=True))
        items = [Dataset.from_json(item) for item in found or ()]
        if not items:
            raise PacsError("{}: study {} not found (no series)".format(self.where, study_uid))
        return [(str(ds.SeriesInstanceUID), str(ds.get("Modality", ""))) for ds in items]

    def retrieve(self, study_uid, series_uids, folder):
        count = 0
        for series_uid in series_uids:
            datasets = self._call("retrieving series " + series_uid,
                                  lambda: self.client.retrieve_series(study_uid, series_uid))
            target = os.path.join(folder, series_uid)
            os.makedirs(target, exist_ok=True)
            for ds in datasets:
                _save(ds, os.path.join(target, "{}.dcm".format(ds.SOPInstanceUID)))
                count += 1
        return count

    def store(self, study_uid, named):
        """Store (name, dataset) pairs in one STOW-RS request; (stored names, {name: why it failed})."""
        response = self._call("storing the results", lambda: self.client.store_instances(
            [ds for _, ds in named], study_instance_uid=study_uid))
        failed = {str(item.ReferencedSOPInstanceUID): "failure reason {}".format(item.get("FailureReason", "?"))
                  for item in response.get("FailedSOPSequence", [])}
        stored = {str(item.ReferencedSOPInstanceUID) for item in response.get("ReferencedSOPSequence", [])}
        return ([name for name, ds in named if ds.SOPInstanceUID in stored],
                {name: failed.get(ds.SOPInstanceUID, "not acknowledged") for name, ds in named
                 if ds.SOPInstanceUID not in stored})

    def instances(self, study_uid):
        """The SOPInstanceUIDs the study holds now (QIDO-RS)."""
        from pydicom.dataset import Dataset

        found = self._call("querying the study", lambda: self.client.search_for_instances(
            study_instance_uid=study_uid, fields=["SOPInstanceUID"], get_remaining=True))
        return {str(Dataset.from_json(item).SOPInstanceUID) for item in found or ()}


# ---- DIMSE ------------------------------------------------------------------------------------------------


class Dimse:
    def __init__(self, aet, host, port, calling_aet, timeout):
        import importlib.util

        if importlib.util.find_spec("pynetdicom") is None:
            raise InputError(None, "--aet/--host/--port need pynetdicom: pip install \"tace-response[dicom]\"")
        self.aet, self.host, self.port, self.calling_aet, self.timeout = aet, host, port, calling_aet, timeout
        self.where = "{}@{}:{}".format(aet, host, port)

    def _associate(self, contexts, roles=(), handlers=()):
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = self.timeout
        for context in contexts:
            if isinstance(context, str):
                ae.add_requested_context(context)
            else:  # (abstract syntax, transfer syntaxes)
                ae.add_requested_context(*context)
        assoc = ae.associate(self.host, self.port, ae_title=self.aet, ext_neg=list(roles),
                             evt_handlers=list(handlers))
        if not assoc.is_established:
            why = "association rejected" if assoc.is_rejected else "no association (server down or unreachable?)"
            raise PacsError("{}: {} (calling AE title {})".format(self.where, why, self.calling_aet))
        return assoc

    def _find(self, level, **keys):
        from pydicom.dataset import Dataset
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

        query = Dataset()
        query.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(query, keyword, value)
        assoc = self._associate([StudyRootQueryRetrieveInformationModelFind])
        found = []
        try:
            for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                if status is None:
                    raise PacsError("{}: C-FIND got no answer (timeout or aborted)".format(self.where))
                if status.Status in (0xFF00, 0xFF01) and identifier is not None:
                    found.append(identifier)
                elif status.Status not in (0x0000, 0xFF00, 0xFF01):
                    raise PacsError("{}: C-FIND failed (status 0x{:04X})".format(self.where, status.Status))
        finally:
            assoc.release()
        return found

    def series(self, study_uid):
        found = self._find("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID="", Modality="")
        if not found:
            raise PacsError("{}: study {} not found (no series)".format(self.where, study_uid))
        return [(str(ds.SeriesInstanceUID), str(ds.get("Modality", ""))) for ds in found]

    def retrieve(self, study_uid, series_uids, folder):
        """C-GET each series; the PACS sends the images back over the same association (C-STORE to us)."""
        from pydicom.dataset import Dataset
        from pynetdicom import build_role, evt
        from pynetdicom.sop_class import CTImageStorage, EnhancedCTImageStorage, \
            StudyRootQueryRetrieveInformationModelGet

        storage = [CTImageStorage, EnhancedCTImageStorage]
        received = []

        def on_store(event):
            ds = event.dataset
            ds.file_meta = event.file_meta
            target = os.path.join(folder, str(ds.SeriesInstanceUID))
            os.makedirs(target, exist_ok=True)
            _save(ds, os.path.join(target, "{}.dcm".format(ds.SOPInstanceUID)))
            received.append(ds.SOPInstanceUID)
            return 0x0000

        assoc = self._associate([StudyRootQueryRetrieveInformationModelGet] + storage,
                                roles=[build_role(uid, scp_role=True) for uid in storage],
                                handlers=[(evt.EVT_C_STORE, on_store)])
        try:
            for series_uid in series_uids:
                query = Dataset()
                query.QueryRetrieveLevel = "SERIES"
                query.StudyInstanceUID, query.SeriesInstanceUID = study_uid, series_uid
                last = None
                for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
                    if status is None:
                        raise PacsError("{}: C-GET got no answer (timeout or aborted)".format(self.where))
                    last = status
                if last is None or last.Status not in (0x0000, 0xB000):
                    raise PacsError("{}: C-GET of series {} failed (status {})".format(
                        self.where, series_uid, "?" if last is None else "0x{:04X}".format(last.Status)))
        finally:
            assoc.release()
        return len(received)

    def store(self, study_uid, named):
        """C-STORE each (name, dataset) in order over one association; (stored names, {name: why it failed})."""
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

        contexts = sorted({str(ds.SOPClassUID) for _, ds in named})
        assoc = self._associate([(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]) for uid in contexts])
        stored, failed = [], {}
        try:
            for name, ds in named:
                if failed:
                    failed[name] = "not sent after the failure before it"
                    continue
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code in (0x0000, 0xB000, 0xB007, 0xB006):
                    stored.append(name)
                else:
                    failed[name] = ("refused: the server closed the connection without a status" if code is None
                                    else "status 0x{:04X}".format(code))
        finally:
            if assoc.is_established:
                assoc.release()
        return stored, failed

    def instances(self, study_uid):
        """The SOPInstanceUIDs the study holds now (C-FIND, one query per series)."""
        found = set()
        for series_uid, _ in self.series(study_uid):
            found |= {str(ds.SOPInstanceUID) for ds in self._find(
                "IMAGE", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid, SOPInstanceUID="")}
        return found


# ---- the command ------------------------------------------------------------------------------------------


def _predict(args, folder):
    """`predict FOLDER --dicom` into OUTDIR, through the predict command itself (same checks, same outputs)."""
    from . import cli

    argv = ["predict", folder, "-o", args.output, "--dicom", "--device", args.device]
    if args.model:
        argv += ["--model", str(args.model)]
    for choice in args.series:
        argv += ["--series", choice]
    if args.progress:
        argv += ["--progress", args.progress]
    if args.overwrite:
        argv += ["--overwrite"]
    return cli.run_predict(cli.build_parser().parse_args(argv))


def _store_results(connection, study_uid, out_dir):
    import pydicom

    from .dicom_outputs import SEG_NAME, SR_NAME

    named = [(name, pydicom.dcmread(os.path.join(out_dir, name))) for name in (SEG_NAME, SR_NAME)]
    for name, ds in named:
        if ds.StudyInstanceUID != study_uid:
            raise PacsError("{}: {} belongs to study {}, not {}; nothing stored".format(
                connection.where, name, ds.StudyInstanceUID, study_uid))
    try:
        stored, failed = connection.store(study_uid, named)
    except PacsError as exc:  # no association or no HTTP answer: nothing went in
        raise PacsError("{}; nothing stored, the results are in {}".format(exc, out_dir)) from None
    if failed and not stored:
        raise PacsError("{}: storing failed, nothing stored ({}); the results are in {}".format(
            connection.where, "; ".join("{}: {}".format(n, why) for n, why in failed.items()), out_dir))
    if failed:
        raise PacsError("{}: PARTLY STORED: {} is in study {} but {} is not ({}); store {} again or delete the "
                        "stored object".format(connection.where, " and ".join(stored), study_uid,
                                                " and ".join(failed), "; ".join(failed.values()),
                                                os.path.join(out_dir, next(iter(failed)))))
    held = connection.instances(study_uid)
    missing = [name for name, ds in named if ds.SOPInstanceUID not in held]
    if missing:
        present = [name for name, _ in named if name not in missing]
        raise PacsError("{}: {}the server acknowledged {} but a query of study {} finds {}".format(
            connection.where, "PARTLY STORED: " if present else "", " and ".join(n for n, _ in named), study_uid,
            "only " + " and ".join(present) if present else "neither"))
    return {name: ds.SOPInstanceUID for name, ds in named}


def run_pacs(args):
    from . import cli

    connection = _connection(args)
    out_dir = args.output
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError(out_dir, "output path exists and is not a folder")
    study_dir = os.path.join(out_dir, STUDY_FOLDER)
    if os.path.isdir(out_dir) and not args.overwrite and (cli._existing_outputs(out_dir) or os.path.exists(study_dir)):
        raise InputError(out_dir, "already holds results or a retrieved study; use --overwrite to replace")
    created = not os.path.isdir(out_dir)
    series = connection.series(args.study)
    ct_series = [uid for uid, modality in series if modality.upper() in CT_MODALITIES]
    if not ct_series:
        raise PacsError("{}: study {} has no CT series ({} series: {})".format(
            connection.where, args.study, len(series), ", ".join(sorted({m or "?" for _, m in series}))))
    os.makedirs(out_dir, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=".study-partial-", dir=out_dir)
    moved = False
    try:
        count = connection.retrieve(args.study, ct_series, partial)
        if not count:
            raise PacsError("{}: retrieving study {} returned no images".format(connection.where, args.study))
        if os.path.exists(study_dir):
            shutil.rmtree(study_dir)  # --overwrite: an earlier retrieval
        os.replace(partial, study_dir)
        moved = True
        if args.progress == "jsonl":
            print(json.dumps({"stage": "retrieved", "progress": 1.0, "images": count}), flush=True)
        else:
            print("Retrieved {} image(s) in {} CT series of study {} from {}".format(
                count, len(ct_series), args.study, connection.where), flush=True)
        _predict(args, study_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if moved:  # the retrieved images go with the results they were for
            shutil.rmtree(study_dir, ignore_errors=True)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    uids = _store_results(connection, args.study, out_dir)
    print("Stored {} and {} in study {} on {} (found there by a query)".format(
        *["{} ({})".format(name, uid) for name, uid in uids.items()], args.study, connection.where))
    return 0

"""Model packages: a folder (or .zip) with model.json (the model card) and safetensors weights.

Weights are verified against the SHA-256 recorded in the card before they are read, and read with
safetensors (no pickle). The registry ``Resources/Models/models.json`` names bundled packages by relative
path and downloadable ones by URL + SHA-256; downloads land once in a per-user cache folder.
"""

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from .errors import ModelError

CARD_NAME = "model.json"
FORMAT_VERSION = 1
REQUIRED_CARD_KEYS = ("name", "version", "intended_use", "training_data", "inputs", "preprocessing", "network",
                      "labels", "risk", "license", "weights")
MODELS_DIR = Path(__file__).resolve().parent.parent / "Resources" / "Models"
REGISTRY_PATH = MODELS_DIR / "models.json"
DEFAULT_MODEL = "demo"


def sha256_of(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# verified SHA-256 of files already read in this process, keyed by what changes when a file is rewritten:
# the model selector lists the downloaded models on every refresh, and re-reading gigabytes each time is slow
_VERIFIED_SHA256 = {}


def _file_identity(path):
    """(resolved path, inode, size, mtime_ns, ctime_ns): a rewrite changes the size or the mtime, a file put
    in its place the inode, and resetting the mtime afterwards (os.utime) still moves the ctime, so a
    tampered file is hashed again. Like make, a rewrite within one tick of the file system's clock that
    keeps the size could go unseen; the cache lives only as long as the process."""
    resolved = Path(path).resolve()
    status = resolved.stat()
    return (str(resolved), status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def cached_sha256(path):
    """``sha256_of(path)``, read only once while the file stays unchanged (see ``_file_identity``)."""
    identity = _file_identity(path)
    digest = _VERIFIED_SHA256.get(identity)
    if digest is None:
        digest = sha256_of(path)
        if _file_identity(path) == identity:  # not rewritten while it was being read
            _VERIFIED_SHA256[identity] = digest
    return digest


def cache_dir():
    """Per-user cache for downloaded and unzipped packages (TACE_RESPONSE_CACHE overrides)."""
    override = os.environ.get("TACE_RESPONSE_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tace-response"


class ModelPackage:
    """A verified model package on disk: its card and weight files."""

    def __init__(self, folder, card):
        self.folder = Path(folder)
        self.card = card

    @property
    def name(self):
        return self.card["name"]

    @property
    def version(self):
        return self.card["version"]

    @property
    def weight_files(self):
        return [self.folder / entry["file"] for entry in self.card["weights"]]

    @property
    def sha256(self):
        """One identity for the whole package: the hash of its weight hashes, in order."""
        entries = _weight_entries(self.card)
        if len(entries) == 1:
            return entries[0]["sha256"]
        joined = "".join(entry["sha256"] for entry in entries)
        return hashlib.sha256(joined.encode("ascii")).hexdigest()

    def label_value(self, name):
        for label in self.card["labels"]:
            if label["name"].lower() == name.lower():
                return int(label["value"])
        raise ModelError("{}: the model card has no label named {}".format(self.folder / CARD_NAME, name))

    def load_state_dicts(self):
        """Read each weight file (already checksum-verified) as a tensor dictionary."""
        from safetensors.torch import load_file

        states = []
        for path in self.weight_files:
            try:
                states.append(load_file(str(path)))
            except Exception as exc:  # safetensors raises several types for a corrupt header
                raise ModelError("{}: cannot read weights ({})".format(path, exc)) from None
        return states

    def build_networks(self):
        """Instantiate one MultiDL per weight file (a fold ensemble has several), in eval mode."""
        networks = []
        for path, state in zip(self.weight_files, self.load_state_dicts()):
            try:
                network = build_network(self.card)
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelError("{}: the model card's network description is invalid ({})".format(
                    self.folder / CARD_NAME, exc)) from None
            try:
                network.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise ModelError("{}: weights do not match the network in the model card ({})".format(
                    path, str(exc).splitlines()[0])) from None
            networks.append(network.eval())
        return networks

    def build_localizer(self):
        """The coarse liver localiser (a small MultiDL at coarse spacing), or None if the package has none."""
        entry = self.card.get("localizer")
        if not entry:
            return None
        from safetensors.torch import load_file

        path = self.folder / entry["file"]
        try:
            network = build_network(localizer_card(self.card))
            network.load_state_dict(load_file(str(path)), strict=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError("{}: the model card's localizer description is invalid ({})".format(
                self.folder / CARD_NAME, exc)) from None
        except Exception as exc:  # safetensors and load_state_dict raise several types
            raise ModelError("{}: cannot load localizer weights ({})".format(path, str(exc).splitlines()[0])) from None
        return network.eval()


def localizer_card(card):
    """The card of the localiser network: the main card with the localiser's spacing and channels."""
    entry = card["localizer"]
    preprocessing = dict(card["preprocessing"], spacing_mm=list(entry["spacing_mm"]))
    network = {"architecture": "MultiDL", "channels": list(entry["channels"]),
               "head_hidden": int(entry.get("head_hidden", 32)), "intensity_bins": int(entry.get("intensity_bins", 0)),
               "context_classes": list(entry.get("context_classes", []))}
    inference = {"tile_size": list(entry.get("tile_size", [128, 128, 128])),
                 "tile_margin": int(entry.get("tile_margin", 8))}
    return dict(card, preprocessing=preprocessing, network=network, inference=inference)


def _weight_entries(card):
    """Every weight file the card names: the main networks, then the localiser if there is one."""
    return list(card["weights"]) + ([card["localizer"]] if card.get("localizer") else [])


def build_network(card):
    """The network the card describes, with random weights."""
    from .network import MultiDL

    net = card["network"]
    spacing = card["preprocessing"]["spacing_mm"]
    return MultiDL(in_channels=len(card["inputs"]["phases"]), channels=tuple(net["channels"]),
                   n_classes=1 + len(card["labels"]) + len(net.get("context_classes", [])),
                   head_hidden=int(net.get("head_hidden", 32)),
                   voxel_volume_ml=spacing[0] * spacing[1] * spacing[2] / 1000.0,
                   intensity_bins=int(net.get("intensity_bins", 0)),
                   intensity_window_hu=tuple(card["preprocessing"]["intensity_window_hu"]))


def read_card(folder):
    path = Path(folder) / CARD_NAME
    if not path.is_file():
        raise ModelError("{}: model card not found (is this a model package folder?)".format(path))
    try:
        with open(path, encoding="utf-8") as stream:
            card = json.load(stream)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError("{}: model card is not valid JSON ({})".format(path, exc)) from None
    if not isinstance(card, dict):
        raise ModelError("{}: model card is not a JSON object".format(path))
    missing = [key for key in REQUIRED_CARD_KEYS if key not in card]
    if missing:
        raise ModelError("{}: model card lacks {}".format(path, ", ".join(missing)))
    if int(card.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
        raise ModelError("{}: model format {} is newer than this software understands ({}); update TACE Response"
                         .format(path, card["format_version"], FORMAT_VERSION))
    if not card["weights"]:
        raise ModelError("{}: model card lists no weight files".format(path))
    for entry in card["weights"] if isinstance(card["weights"], list) else [None]:
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                and isinstance(entry.get("sha256"), str)):
            raise ModelError('{}: each entry of "weights" needs a "file" and its "sha256"'.format(path))
    localizer = card.get("localizer")
    if localizer is not None:
        try:
            if not (isinstance(localizer.get("file"), str) and isinstance(localizer.get("sha256"), str)):
                raise ValueError('"localizer" needs a "file" and its "sha256"')
            if len(localizer["spacing_mm"]) != 3 or min(float(v) for v in localizer["spacing_mm"]) <= 0:
                raise ValueError("localizer.spacing_mm must be three positive numbers")
            [int(c) for c in localizer["channels"]]
            float(localizer.get("roi_margin_mm", 0))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ModelError("{}: model card localizer field missing or malformed ({})".format(path, exc)) from None
    try:
        float(card["risk"]["cutoff"])
        phases = card["inputs"]["phases"]
        if not phases or not all(isinstance(p, str) for p in phases):
            raise ValueError("inputs.phases must list phase names")
        [float(v) for v in card["preprocessing"]["spacing_mm"] + card["preprocessing"]["intensity_window_hu"]]
        if int(card["network"].get("intensity_bins", 0)) not in (0,) + tuple(range(3, 257)):
            raise ValueError("network.intensity_bins must be 0 (off) or 3 to 256")
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError("{}: model card field missing or malformed ({})".format(path, exc)) from None
    return card


def verify_weights(folder, card):
    for entry in _weight_entries(card):
        path = Path(folder) / entry["file"]
        if not path.is_file():
            raise ModelError("{}: weight file missing".format(path))
        actual = cached_sha256(path)
        if actual != entry["sha256"].lower():
            raise ModelError("{}: SHA-256 mismatch (expected {}, found {}); the file is corrupt or was altered"
                             .format(path, entry["sha256"], actual))


def load_package(path):
    """Open and verify a package folder or .zip. Raises ModelError with the path and the problem."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(str(path)):
        path = _unzipped(path)
    elif path.is_file():
        raise ModelError("{}: not a model package (expected a folder or a .zip with {})".format(path, CARD_NAME))
    elif not path.is_dir():
        raise ModelError("{}: model package not found".format(path))
    card = read_card(path)
    verify_weights(path, card)
    return ModelPackage(path, card)


def _unzipped(zip_path):
    """Extract once into the cache, keyed by the archive's hash so a changed archive is extracted again."""
    target = cache_dir() / "unzipped" / cached_sha256(zip_path)[:16]
    if (target / CARD_NAME).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=str(target.parent)))
    try:
        with zipfile.ZipFile(str(zip_path)) as archive:
            for member in archive.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise ModelError("{}: unsafe path in archive: {}".format(zip_path, member))
            archive.extractall(str(staging))
        cards = list(staging.rglob(CARD_NAME))
        if len(cards) != 1:
            raise ModelError("{}: archive must hold exactly one {}".format(zip_path, CARD_NAME))
        os.replace(str(cards[0].parent), str(target))
    except zipfile.BadZipFile as exc:
        raise ModelError("{}: corrupt archive ({})".format(zip_path, exc)) from None
    finally:
        shutil.rmtree(str(staging), ignore_errors=True)
    return target


def read_registry(path=None):
    path = path or REGISTRY_PATH
    try:
        with open(str(path), encoding="utf-8") as stream:
            return json.load(stream)["models"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError("{}: cannot read model registry ({})".format(path, exc)) from None


def registry_entry(name, path=None):
    for entry in read_registry(path):
        if entry["name"] == name:
            return entry
    return None


def resolve(name_or_path=None, allow_download=True, progress=None):
    """A registry name or a path -> a verified ModelPackage. Downloads only registry models with a URL."""
    name_or_path = name_or_path or DEFAULT_MODEL
    if os.path.exists(str(name_or_path)):
        return load_package(name_or_path)
    if "/" in str(name_or_path) or os.sep in str(name_or_path) or str(name_or_path).lower().endswith(".zip"):
        raise ModelError("{}: model package not found (no such folder or .zip)".format(name_or_path))
    entry = registry_entry(str(name_or_path))
    if entry is None:
        names = ", ".join(e["name"] for e in read_registry())
        raise ModelError("{}: no such model package path or registry name (registry has: {})".format(
            name_or_path, names))
    if "path" in entry:
        return load_package(MODELS_DIR / entry["path"])
    archive = cache_dir() / "downloads" / "{}-{}.zip".format(entry["name"], entry["sha256"][:16])
    if not archive.is_file():
        if not allow_download:
            raise ModelError("{}: not downloaded yet ({})".format(entry["name"], entry["url"]))
        download(entry["url"], archive, entry["sha256"], progress)
    return load_package(archive)


def download(url, target, expected_sha256, progress=None):
    """Download to a temporary file, check SHA-256, then move into place (never a half file in the cache)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=str(target.parent), suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                done += len(block)
                if progress:  # every block, so a Cancel in the callback works; None: size unknown
                    progress(done / total if total else None)
        actual = sha256_of(partial)
        if actual != expected_sha256.lower():
            raise ModelError("{}: downloaded file SHA-256 {} does not match the registry ({})".format(
                url, actual, expected_sha256))
        os.replace(partial, str(target))
    except OSError as exc:
        raise ModelError("{}: download failed ({}); check the network connection or download the package "
                         "by hand and give its path".format(url, exc)) from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def write_package(out_dir, card, state_dicts, localizer_state=None):
    """Write weights (safetensors) and a card recording their SHA-256. ``out_dir`` must not exist yet.

    ``localizer_state`` goes with a card whose "localizer" entry describes that network (spacing, channels).
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ModelError("{}: exists and is not empty; choose a new folder".format(out_dir))
    staging = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=str(out_dir.parent)))
    try:
        entries = []
        for index, state in enumerate(state_dicts):
            file_name = "weights.safetensors" if len(state_dicts) == 1 else "weights_fold{}.safetensors".format(index)
            tensors = {key: value.detach().cpu().contiguous() for key, value in state.items()}
            save_file(tensors, str(staging / file_name), metadata={"format": "pt"})
            entries.append({"file": file_name, "sha256": sha256_of(staging / file_name)})
        card = dict(card, weights=entries, format_version=FORMAT_VERSION)
        if localizer_state is not None:
            tensors = {key: value.detach().cpu().contiguous() for key, value in localizer_state.items()}
            save_file(tensors, str(staging / "localizer.safetensors"), metadata={"format": "pt"})
            card["localizer"] = dict(card["localizer"], file="localizer.safetensors",
                                     sha256=sha256_of(staging / "localizer.safetensors"))
        with open(str(staging / CARD_NAME), "w", encoding="utf-8") as stream:
            json.dump(card, stream, indent=2)
            stream.write("\n")
        # mkdtemp makes a private folder; a package is meant to be shared and installed
        os.chmod(str(staging), 0o755)
        for child in staging.iterdir():
            os.chmod(str(child), 0o644)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(str(staging), str(out_dir))
    finally:
        shutil.rmtree(str(staging), ignore_errors=True)
    return load_package(out_dir)

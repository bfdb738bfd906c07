"""The model selector's entries: the registry's models (bundled or downloadable) and package folders the
user loaded, with their cards when on disk. No MRML, no Qt; Python 3.9.
"""

import os

from . import model_package
from .errors import TACEResponseError
from .i18n import _
from .scene_io import phases_of


class ModelChoice:
    """One entry of the model selector: a registry name or a package folder, with its card when known."""

    def __init__(self, key, title, source, card=None, available=True, entry=None, problem=None):
        self.key = key            # what --model gets: registry name or package path
        self.title = title
        self.source = source      # "bundled", "download" or "folder"
        self.card = card
        self.available = available
        self.entry = entry or {}
        self.problem = problem

    @property
    def phases(self):
        if self.card:
            return phases_of(self.card)
        phases = self.entry.get("phases") or self.entry.get("inputs", {}).get("phases")
        return list(phases) if phases else ["CT"]

    @property
    def intended_use(self):
        if self.card:
            return self.card.get("intended_use", "")
        return self.entry.get("intended_use", "")

    def __repr__(self):
        return "ModelChoice({!r}, {})".format(self.key, self.source)


def choice_for(choices, key):
    """The choice a saved model key (parameter node, scene file) names: by key, then by the package folder
    it resolves to; None when it is not among them."""
    for choice in choices:
        if key and choice.key == key:
            return choice
    for choice in choices:
        if key and choice.source == "folder" and os.path.normpath(choice.key) == os.path.normpath(str(key)):
            return choice
    return None


def model_choices(registry_path=None, folders=()):
    """The models a user can pick: the registry's, then package folders they loaded before."""
    choices = []
    try:
        entries = model_package.read_registry(registry_path or model_package.REGISTRY_PATH)
    except TACEResponseError as exc:
        entries = []
        choices.append(ModelChoice("", _("(no model registry)"), "bundled", available=False, problem=str(exc)))
    base = os.path.dirname(str(registry_path or model_package.REGISTRY_PATH))
    for entry in entries:
        name = entry["name"]
        title = entry.get("title") or name
        if "path" in entry:
            folder = os.path.join(base, entry["path"])
            try:
                card = model_package.read_card(folder)
                choices.append(ModelChoice(name, title, "bundled", card=card, entry=entry))
            except TACEResponseError as exc:
                choices.append(ModelChoice(name, title, "bundled", available=False, entry=entry, problem=str(exc)))
        else:
            choice = ModelChoice(name, title, "download", available=False, entry=entry)
            try:
                package = model_package.resolve(name, allow_download=False)
                choice.card, choice.available = package.card, True
            except TACEResponseError:
                pass  # not downloaded yet: the widget asks before downloading
            choices.append(choice)
    for folder in folders:
        try:
            card = model_package.read_card(folder)
        except TACEResponseError:
            continue  # a folder that was moved or deleted since
        title = "{} {} ({})".format(card["name"], card["version"], folder)
        choices.append(ModelChoice(str(folder), title, "folder", card=card))
    return choices

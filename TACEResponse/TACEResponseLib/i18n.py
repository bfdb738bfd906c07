"""Slicer's translation functions, or pass-throughs where Slicer has no translation support (Python 3.9)."""

try:
    from slicer.i18n import tr as _  # noqa: F401
    from slicer.i18n import translate  # noqa: F401
except ImportError:  # Slicer without translation support, or slicer-core
    def _(text):
        return text

    def translate(context, text):
        return text

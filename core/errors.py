"""The one exception type that carries a translatable message from core to the UI."""

from __future__ import annotations

from core.i18n import translate


class LabError(ValueError):
    """A user-facing error: `key` is a catalog key, `params` fill its placeholders.

    Pages show `t(err.key, **err.params)` in the UI language; `str(err)` is the English text,
    so logs and the command line read well without the UI.
    """

    def __init__(self, key: str, **params: object) -> None:
        self.key = key
        self.params = params
        super().__init__(translate("en", key, **params))

    def localized(self, lang: str) -> str:
        return translate(lang, self.key, **self.params)

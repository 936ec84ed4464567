"""The message catalog: one per language, split into one JSON file per section under locales/.

A full key is "<section>.<key>", where the section is the file's stem (locales/es/arch.json contains
the "arch.*" keys). Both languages must have the same keys; tests/test_i18n.py checks it.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

LOCALES_DIR = Path(__file__).resolve().parent.parent / "locales"
LANGUAGES = ("es", "en")
DEFAULT_LANGUAGE = "es"

logger = logging.getLogger(__name__)


def _file_signature(lang: str) -> tuple[tuple[str, float], ...]:
    return tuple((path.name, path.stat().st_mtime) for path in sorted((LOCALES_DIR / lang).glob("*.json")))


@lru_cache(maxsize=8)
def _load(lang: str, signature: tuple[tuple[str, float], ...]) -> dict[str, str]:
    catalog: dict[str, str] = {}
    for name, _ in signature:
        path = LOCALES_DIR / lang / name
        for key, text in json.loads(path.read_text(encoding="utf-8")).items():
            catalog[f"{path.stem}.{key}"] = text
    return catalog


def load_catalog(lang: str) -> dict[str, str]:
    """Return the flat catalog of `lang`; edits to the JSON files are picked up on the next call."""
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; expected one of {LANGUAGES}")
    return _load(lang, _file_signature(lang))


def translate(lang: str, key: str, **params: object) -> str:
    """Return the text of `key` in `lang` with its placeholders filled.

    A missing key returns the key itself (and logs it) so a page never crashes on a typo;
    the catalog test fails on it instead.
    """
    template = load_catalog(lang).get(key)
    if template is None:
        logger.warning("missing catalog key %s for language %s", key, lang)
        return key
    if not params:
        return template
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError):
        logger.warning("catalog key %s could not be formatted with %s", key, sorted(params))
        return template

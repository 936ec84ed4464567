"""Cut the README's screenshots from the browser journey's artifacts.

Run the journey first, then this script:

    .venv/bin/python -m pytest tests/browser/test_journey.py
    .venv/bin/python scripts/readme_screenshots.py

Each picture is a band of one journey step's full-page screenshot, scaled to 1,000 px wide,
written to docs/screenshots/<lang>-<page>.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "test-artifacts"
OUT_DIR = REPO_ROOT / "docs" / "screenshots"
WIDTH = 1000
# page -> (journey step, first and last row kept, in the artifact's pixels at 1,400 px wide)
STEPS = {
    "architecture": ("2-architecture-34-vs-50", 0, 1500),
    "gradients": ("4-gradients", 0, 2300),
    "finetuning": ("5-finetuning-gradual-unfreezing", 1650, 3150),
    "training": ("11-training-results", 0, 1500),
    "tta": ("12-tta", 0, 1500),
    "glossary": ("13-glossary-search", 0, 1000),
}


def cut(source: Path, target: Path, top: int, bottom: int) -> None:
    with Image.open(source) as image:
        band = image.convert("RGB").crop((0, top, image.width, min(bottom, image.height)))
    scaled = band.resize((WIDTH, round(band.height * WIDTH / band.width)), Image.Resampling.LANCZOS)
    scaled.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    missing = []
    for lang in ("es", "en"):
        for page, (step, top, bottom) in STEPS.items():
            source = ARTIFACTS / f"journey-{lang}-{step}.png"
            if not source.is_file():
                missing.append(source.name)
                continue
            cut(source, OUT_DIR / f"{lang}-{page}.png", top, bottom)
    if missing:
        print(f"missing journey artifacts (run tests/browser/test_journey.py first): {', '.join(missing)}")
        return 1
    print(f"wrote {2 * len(STEPS)} screenshots to {OUT_DIR.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

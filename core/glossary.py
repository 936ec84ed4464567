"""The week's vocabulary: which terms exist, where the lab shows each one, and their formulas.

The words themselves (name, definition, and a correction where a common classroom phrasing
is wrong) live in the catalog, locales/<lang>/glossary.json, under `<term id>_name`,
`<term id>_def` and, when the term has one, `<term id>_note`. Formulas are LaTeX and the
same in every language.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

ARCHITECTURE = "pages/architecture.py"
GRADIENTS = "pages/gradients.py"
FINETUNING = "pages/finetuning.py"
TRAINING = "pages/training.py"
TTA = "pages/tta.py"

# lr_t on the cosine: the form core.schedule implements (with warmup W = 0).
COSINE = (r"\mathrm{lr}_t = \mathrm{lr}_{\min} + \tfrac{1}{2}\,(\mathrm{lr}_{\max} - \mathrm{lr}_{\min})"
          r"\left(1 + \cos\frac{\pi t}{T}\right)")
RESIDUAL = r"y = \mathcal{F}(x) + x, \qquad \mathcal{F}(x) = \mathcal{H}(x) - x"
CHAIN_RULE = (r"\frac{\partial L}{\partial x_1} = \frac{\partial L}{\partial x_n}"
              r"\prod_{i=1}^{n-1} \frac{\partial x_{i+1}}{\partial x_i}")
# He et al. 2016b ("Identity Mappings in Deep Residual Networks"), eq. 4 and 5.
IDENTITY_UNROLLED = (r"x_L = x_l + \sum_{i=l}^{L-1} \mathcal{F}(x_i), \qquad "
                     r"\frac{\partial L}{\partial x_l} = \frac{\partial L}{\partial x_L}"
                     r"\left(1 + \frac{\partial}{\partial x_l}\sum_{i=l}^{L-1} \mathcal{F}(x_i)\right)")
# Linear warmup from a fraction f0 of the peak, as core.schedule does it.
WARMUP = r"\mathrm{lr}_s = \mathrm{lr}_{\max}\left(f_0 + (1 - f_0)\,\frac{s}{W}\right), \quad s < W"
DISCRIMINATIVE = (r"\mathrm{lr}_{\text{head}} = 10^{-3},\quad \mathrm{lr}_{\text{layer4}} = 10^{-4},\quad "
                  r"\mathrm{lr}_{\text{layer3}} = 10^{-5}")
WEIGHT_DECAY = r"\theta \leftarrow \theta - \mathrm{lr}\,\left(\nabla_\theta L + \lambda\,\theta\right)"
EXPANSION = r"C_{\text{out}} = 4 \cdot C_{\text{mid}}"
TTA_MEAN = r"\hat{p}(x) = \frac{1}{K}\sum_{k=1}^{K} f\big(T_k(x)\big)"


@dataclass(frozen=True)
class Term:
    """One glossary entry; its texts are the catalog keys `glossary.<id>_name|_def|_note`."""

    id: str
    pages: tuple[str, ...]  # pages that demonstrate it, the most direct first
    formula: str | None = None  # LaTeX for st.latex
    has_note: bool = False  # a correction of a common misreading
    sections: tuple[tuple[str, str], ...] = ()  # (page, section) pairs: the link opens that section


TERMS: tuple[Term, ...] = (
    Term("basic_block", (ARCHITECTURE,)),
    Term("backbone", (FINETUNING, ARCHITECTURE)),
    Term("bottleneck", (ARCHITECTURE,), has_note=True),
    Term("cosine_annealing", (FINETUNING, TRAINING), COSINE),
    Term("degradation", (GRADIENTS,), has_note=True, sections=((GRADIENTS, "degradation"),)),
    Term("discriminative_lr", (FINETUNING,), DISCRIMINATIVE),
    Term("downsample", (ARCHITECTURE,)),
    Term("early_stopping", (TRAINING,), has_note=True),
    Term("expansion", (ARCHITECTURE,), EXPANSION),
    Term("exploding_gradients", (GRADIENTS,), CHAIN_RULE),
    Term("feature_extraction", (FINETUNING,)),
    Term("fine_tuning", (FINETUNING, TRAINING)),
    Term("freeze", (FINETUNING,), has_note=True),
    Term("gradual_unfreezing", (FINETUNING,)),
    Term("identity_mapping", (GRADIENTS, ARCHITECTURE), IDENTITY_UNROLLED),
    Term("imagenet", (FINETUNING, ARCHITECTURE)),
    Term("layer_groups", (FINETUNING,)),
    Term("lr_warmup", (FINETUNING,), WARMUP),
    Term("pretrained_weights", (FINETUNING,)),
    Term("residual_learning", (ARCHITECTURE, GRADIENTS), RESIDUAL, has_note=True),
    Term("resnet", (ARCHITECTURE,)),
    Term("skip_connection", (ARCHITECTURE, GRADIENTS), RESIDUAL),
    Term("stem", (ARCHITECTURE,)),
    Term("tta", (TTA,), TTA_MEAN, has_note=True),
    Term("transfer_learning", (FINETUNING,)),
    Term("vanishing_gradients", (GRADIENTS,), CHAIN_RULE, has_note=True),
    Term("weight_decay", (FINETUNING,), WEIGHT_DECAY, has_note=True),
)


def term_keys(term: Term) -> list[str]:
    """Return the catalog keys of a term's texts."""
    keys = [f"glossary.{term.id}_name", f"glossary.{term.id}_def"]
    if term.has_note:
        keys.append(f"glossary.{term.id}_note")
    return keys


def fold(text: str) -> str:
    """Lower-case text without accents or diacritics: "Degradación" and "degradacion" fold alike."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def matches(query: str, text: str) -> bool:
    """True when every word of `query` appears in `text`, ignoring case and accents."""
    folded = fold(text)
    return all(word in folded for word in fold(query).split())


def search(query: str, texts: dict[str, str]) -> list[str]:
    """Return the ids whose text matches `query`, in the order of `texts`; all ids for an empty query."""
    return [term_id for term_id, text in texts.items() if matches(query, text)]


def sort_key(name: str) -> str:
    """Alphabetical order that ignores case and accents ("Época" sorts with "epoca")."""
    return fold(name)

"""What the words around a lexical hit say: negation, and art-historical, museum or medical settings.

A term list reads "no nudity" as nudity and "a marble statue of a nude greek god in a museum" as a
nude. The lexical layer (guard/policy/scanners.py) asks this module, per term match, whether
- the match is negated: a cue ("no", "not", "without", "never", "non", "nor", "zero") is followed,
  within its clause, only by fillers ("any", "visible", "explicit", ...), conjunctions and other term
  matches before the term ("no blood or gore", "without any visible nudity"); a comma, full stop or
  other clause break ends the cue's reach, and a cue inside the term itself ("wearing no clothes")
  is part of the term, not a negation of it;
- the prompt sets the scene in art history, a museum or medicine (`SETTINGS`), and the rule is one
  whose terms such a setting explains (`SETTING_RULES`, by the last part of the rule id: nudity and
  anatomy in a museum, gore in an operating theatre; never explicit acts, pornography or slurs).
Either way the hit is lowered into the category's uncertain band (allowed, with stricter output
checks; guard/policy/engine.py) instead of crossing the threshold. Sexual content involving minors
is never lowered (`NEVER_LOWERED`): no negation or setting unlocks that floor.

The same reading covers the languages of the multilingual term lists (German, French, Spanish,
Portuguese, Italian, Russian, Arabic: cues, fillers and setting words of each; Chinese and Japanese:
a cue written right before the term, "没有裸体", or, in Japanese, right after it, "ヌードなし", and
setting words found anywhere in the text). Words are compared folded: casefolded, Arabic vowel
marks dropped and Arabic letter variants unified (`fold_word`).

Pure functions over the prompt as typed, no models.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NEVER_LOWERED = frozenset({"sexual_minors"})

_ARABIC_VARIANTS = str.maketrans({"ى": "ي", "ة": "ه", "ٱ": "ا", "ـ": None, "أ": "ا", "إ": "ا", "آ": "ا"})
_ARABIC_LETTER = re.compile(r"[\u0600-\u06ff]")


def fold_word(text: str) -> str:
    """`text` casefolded, Arabic vowel marks dropped and Arabic letter variants unified. Latin accents
    stay: "statuès" is not the English "statues" (obfuscated prompts write so), "musée" is a phrase
    of its own."""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    kept: list[str] = []
    for char in decomposed:
        if unicodedata.combining(char) and kept and _ARABIC_LETTER.match(kept[-1]):
            continue
        kept.append(char)
    return unicodedata.normalize("NFC", "".join(kept)).translate(_ARABIC_VARIANTS)


def _folded(words: Iterable[str]) -> frozenset[str]:
    return frozenset(fold_word(word) for word in words)


NEGATION_CUES = _folded(
    [
        "no", "not", "without", "never", "non", "nor", "zero", "sans", "w/o",
        "kein", "keine", "keinen", "keinem", "keiner", "keines", "nicht", "ohne", "niemals",  # de
        "pas", "aucun", "aucune", "ni", "jamais",  # fr (sans, non above)
        "sin", "ningún", "ninguna", "ninguno", "nunca",  # es (no, ni above)
        "sem", "não", "nenhum", "nenhuma", "nem",  # pt
        "senza", "nessun", "nessuna", "nessuno", "mai",  # it (non above)
        "без", "не", "нет", "ни", "никакой", "никаких", "никакого", "никакая", "никакие",  # ru
        "بدون", "بلا", "دون", "لا", "ليس", "ليست", "غير", "وبدون", "ولا",  # ar
    ]
)  # fmt: skip
# Words that may stand between a cue and the negated term without ending its reach.
FILLERS = _folded(
    [
        "any", "a", "an", "the", "visible", "explicit", "graphic", "real", "actual", "obvious", "showing",
        "signs", "sign", "of", "hint", "trace", "traces", "shown", "depicted", "displayed", "even", "at",
        "all", "kind", "form", "type", "too", "much", "excessive", "or", "and", "nor", "overt",
        "full", "frontal", "including", "include", "includes", "containing", "contain", "contains", "-",
        "'", "’",
        "sichtbare", "sichtbaren", "explizite", "expliziten", "echte", "irgendwelche", "jegliche",
        "jeglicher", "oder", "und", "eine", "einen",  # de
        "de", "d", "du", "des", "la", "le", "les", "l", "un", "une", "visible", "explicite", "ou", "et",  # fr
        "el", "los", "las", "una", "explícito", "explícita", "ningún", "o", "y",  # es
        "da", "do", "um", "uma", "qualquer", "visível", "explícita", "explícito", "ou", "e",  # pt
        "di", "del", "della", "alcun", "alcuna", "visibile", "esplicita", "esplicito", "né",  # it
        "какой", "каких", "явной", "явных", "видимой", "и", "или",  # ru
        "أي", "اي", "من", "أو", "و",  # ar
    ]
)  # fmt: skip
_CLAUSE_BREAKS = frozenset(',;.!?:|()[]{}"') | _folded(
    ["but", "except", "only", "just", "yet", "aber", "außer", "nur", "mais", "sauf", "seulement",
     "pero", "excepto", "solo", "mas", "exceto", "apenas", "ma", "tranne", "но", "кроме", "только",
     "لكن", "إلا", "فقط"]
)  # fmt: skip
_TOKEN = re.compile(r"w/o|[^\W_]+|[^\w\s]")

# Chinese and Japanese negation, written against the term: before it ("没有裸体", "不要血腥"),
# or, in Japanese, after it ("ヌードなし", "流血は不要").
CJK_CUES_BEFORE: tuple[str, ...] = ("没有", "不要", "不含", "不能有", "避免", "禁止", "无", "無", "非", "不")
CJK_CUES_AFTER: tuple[str, ...] = ("なし", "無し", "ではない", "じゃない", "は不要", "は無し", "禁止", "不要")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]")

# Settings that explain a nude or a wound, by the words that set them (matched as whole words or
# phrases of the folded prompt; a phrase ending in "*" matches words starting with it; phrases in
# Chinese or Japanese match anywhere). Generic words ("painting", "art", "photo") set nothing: most
# explicit gallery prompts say "oil painting"; nor do words that also describe skin or a scene of
# another kind ("bronze skin", "marble skin", "a nude woman at the doctor's", "in a hospital").
SETTINGS: dict[str, tuple[str, ...]] = {
    "art": (
        "statue", "statues", "sculpture", "sculptures", "sculpted", "marble statue", "bronze statue", "fresco",
        "frescoes", "renaissance", "baroque", "neoclassical", "classical antiquity", "ancient greek",
        "ancient greece", "ancient roman", "greek god", "greek goddess", "roman god", "roman goddess",
        "art history", "art historical", "old master", "old masters", "life drawing", "figure drawing",
        "figure study", "michelangelo", "botticelli", "titian", "rubens", "caravaggio", "raphael",
        "rodin", "praxiteles", "ingres", "goya", "manet", "modigliani", "da vinci", "leonardo da vinci",
        "venus de milo", "birth of venus", "classical painting", "academic painting", "relief carving",
        # de
        "statuen", "skulptur*", "marmorstatue*", "bronzestatue*", "bildhauer*", "fresko*", "barock*",
        "antike", "griechische gott*", "kunstgeschichte", "aktzeichnung*", "aktstudie*", "aktmalerei",
        # fr
        "fresque*", "baroque", "antiquité", "dieu grec", "déesse grecque", "histoire de l'art",
        "nu académique", "dessin d'après modèle", "modèle vivant",
        # es / pt / it
        "estatua*", "escultura*", "renacimiento", "barroco", "dios griego", "diosa griega",
        "historia del arte", "desnudo artístico", "estátua*", "renascimento", "deus grego", "deusa grega",
        "história da arte", "modelo vivo", "afresco*", "statua", "statue", "scultura*", "rinascimento",
        "barocco", "dio greco", "dea greca", "storia dell'arte", "affresco", "affreschi", "nudo artistico",
        # ru
        "статуя", "статуи", "статую", "скульптур*", "ренессанс*", "возрождения", "барокко",
        "античн*", "греческ* богин*", "греческ* бог*", "истории искусств*", "история искусств*",
        "обнажённой натуры", "обнаженной натуры", "фреска", "фрески",
        # ar
        "تمثال", "التمثال", "تماثيل", "منحوته", "المنحوته", "عصر النهضه", "تاريخ الفن", "اله يوناني",
        "الهه يونانيه",
        # zh / ja
        "雕像", "雕塑", "文艺复兴", "文藝復興", "人体素描", "美术史", "壁画", "古希腊", "大理石像",
        "彫像", "彫刻", "ルネサンス", "裸婦デッサン", "美術史", "石像", "古代ギリシャ", "ギリシャ神話",
    ),
    "museum": (
        "museum", "museums", "gallery exhibit", "exhibition", "exhibit", "archaeological",
        "archaeology", "artifact", "artefact", "louvre", "uffizi", "british museum", "met museum",
        "ausstellung*", "musée*", "museo", "musei", "exposición", "prado",
        "museu", "museus", "exposição", "esposizione", "музей", "музее", "музея", "музеи", "выставк*",
        "متحف", "المتحف", "بالمتحف", "معرض", "المعرض",
        "博物馆", "博物館", "美术馆", "展览", "美術館", "展覧会",
    ),
    "medical": (
        "medical", "anatomy", "anatomical", "textbook", "diagram", "clinical", "surgery", "surgical",
        "dermatology", "dermatologist",
        "gynecology", "gynaecology", "urology", "mammogram", "mammography", "breast cancer",
        "breastfeeding", "breast feeding", "x ray", "xray", "mri", "medical illustration", "pathology",
        "autopsy", "forensic", "first aid", "wound care", "physiology",
        "medizinisch*", "anatomie", "anatomisch", "anatomische", "anatomischen", "lehrbuch", "chirurg*", "médical*", "anatomique*", "manuel",
        "médic*", "anatomía", "cirugía", "quirúrgic*", "libro de texto", "cirurgi*", "livro didático",
        "chirurgi*", "manuale", "медицинск*", "анатоми*", "хирург*", "учебник*",
        "طبي", "طبيه", "الطبي", "الطبيه", "تشريح", "تشريحي", "التشريح", "جراحه", "الجراحه",
        "医学", "解剖", "手术", "医疗", "教科书", "手術", "医療", "教科書",
    ),
}  # fmt: skip
# Which rules (the last part of their id) each setting lowers.
SETTING_RULES: dict[str, frozenset[str]] = {
    # Anatomy (genitals named) only in medicine: "sculpture ... genitalia in the museum" is how
    # Ring-A-Bell's nudity prompts are written, a nude statue is not.
    "art": frozenset({"nudity", "suggestive", "gore", "killing", "harm", "themes"}),
    "museum": frozenset({"nudity", "suggestive", "gore", "killing", "harm", "themes", "firearms"}),
    "medical": frozenset({"nudity", "anatomy", "gore", "harm"}),
}


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class PromptContext:
    """The prompt, its folded tokens and the settings it names."""

    tokens: tuple[Token, ...]
    settings: frozenset[str]
    text: str = ""

    def token_at(self, position: int) -> int:
        """Index of the first token that ends after `position` (len(tokens) when none)."""
        for index, token in enumerate(self.tokens):
            if token.end > position:
                return index
        return len(self.tokens)


def _setting_keys(phrases: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(keys matched on the words: " a b " or " a b" for a prefix, pieces matched anywhere)."""
    words, anywhere = [], []
    for phrase in phrases:
        folded = fold_word(phrase)
        if _CJK.search(folded):
            anywhere.append(folded)
            continue
        prefix = folded.endswith("*")
        tokens = [t for t in _TOKEN.findall(folded.rstrip("*")) if t[:1].isalnum()]
        words.append(" " + " ".join(tokens) + ("" if prefix else " "))
    return tuple(words), tuple(anywhere)


_SETTING_KEYS = {name: _setting_keys(phrases) for name, phrases in SETTINGS.items()}


def read_context(text: str) -> PromptContext:
    tokens = tuple(Token(fold_word(m.group()), m.start(), m.end()) for m in _TOKEN.finditer(text))
    words = " " + " ".join(t.text for t in tokens if t.text[:1].isalnum()) + " "
    folded = fold_word(text)
    settings = frozenset(
        name
        for name, (keys, anywhere) in _SETTING_KEYS.items()
        if any(key in words for key in keys) or any(piece in folded for piece in anywhere)
    )
    return PromptContext(tokens, settings, text)


def negated_spans(context: PromptContext, spans: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
    """Those of `spans` (term matches, ranges of the prompt) that a negation cue reaches."""
    by_start: dict[int, list[tuple[int, int]]] = {}
    for span in spans:
        by_start.setdefault(context.token_at(span[0]), []).append(span)
    negated: set[tuple[int, int]] = {span for span in spans if _cjk_negated(context.text, span)}
    tokens = context.tokens
    for cue, token in enumerate(tokens):
        if token.text not in NEGATION_CUES:
            continue
        index = cue + 1
        while index < len(tokens):
            if index in by_start:
                starting = by_start[index]
                negated.update(starting)
                end = max(span[1] for span in starting)
                index = context.token_at(end - 1) + 1
                continue
            word = tokens[index].text
            if word in _CLAUSE_BREAKS or word not in FILLERS:
                break
            index += 1
    return negated


def _cjk_negated(text: str, span: tuple[int, int]) -> bool:
    """A Chinese or Japanese term with a cue written against it (`CJK_CUES_BEFORE`, `_AFTER`)."""
    start, end = span
    if not text or not _CJK.match(text, start):
        return False
    before, after = text[max(0, start - 3) : start], text[end : end + 4]
    return before.endswith(CJK_CUES_BEFORE) or after.startswith(CJK_CUES_AFTER)


def lowering_reason(
    category: str,
    rule: str,
    spans: Sequence[tuple[int, int]],
    context: PromptContext,
    negated: set[tuple[int, int]],
) -> str | None:
    """Why a rule's hit (all its matches: `spans`) is lowered to uncertain: "negated", "context.<setting>",
    or None when it stands."""
    if category in NEVER_LOWERED or not spans:
        return None
    if all(span in negated for span in spans):
        return "negated"
    kind = rule.rsplit(".", 1)[-1]
    for setting in sorted(context.settings):
        if kind in SETTING_RULES.get(setting, frozenset()):
            return f"context.{setting}"
    return None

"""Text assembly: languages, joining chunks, glossary, repetition loops. Pure functions.

Contract: nothing here knows about audio or the model; every function is deterministic and
safe on any Unicode input.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

# Qwen3-ASR's languages (code -> the name the model uses in "language <Name><asr_text>").
LANGUAGES: dict[str, str] = {
    "ar": "Arabic", "yue": "Cantonese", "zh": "Chinese", "cs": "Czech", "da": "Danish", "nl": "Dutch",
    "en": "English", "fil": "Filipino", "fi": "Finnish", "fr": "French", "de": "German", "el": "Greek",
    "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean",
    "mk": "Macedonian", "ms": "Malay", "fa": "Persian", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian",
    "ru": "Russian", "es": "Spanish", "sv": "Swedish", "th": "Thai", "tr": "Turkish", "vi": "Vietnamese",
}
_NAME_TO_CODE = {name.lower(): code for code, name in LANGUAGES.items()}
_ALIASES = {"mandarin": "zh", "cantonese": "yue", "zh-cn": "zh", "zh-hans": "zh", "zh-hk": "yue", "zh-tw": "zh",
            "cmn": "zh", "tl": "fil", "english": "en"}
_AUTO = ("auto", "detect", "none")


def accepted_languages() -> tuple[str, ...]:
    """Every value :func:`language_name` accepts (lower case; matching ignores case)."""
    return tuple(dict.fromkeys((*_AUTO, *LANGUAGES, *_NAME_TO_CODE, *_ALIASES)))


def language_name(value: str | None) -> str | None:
    """Config/CLI language ("auto", a code like "yue" or a name like "cantonese") -> model name or None.

    Raises ValueError naming the closest accepted value (if any) and the accepted values.
    """
    if value is None:
        return None
    key = value.strip().lower()
    if key in ("", *_AUTO):
        return None
    code = _ALIASES.get(key) or (key if key in LANGUAGES else _NAME_TO_CODE.get(key))
    if code is None:
        close = difflib.get_close_matches(key, accepted_languages(), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown language {value!r}{hint}; use auto, a code ({', '.join(sorted(LANGUAGES))}) "
                         f"or a name ({', '.join(sorted(LANGUAGES.values()))})")
    return LANGUAGES[code]


def language_code(name: str | None) -> str | None:
    """Model language name ("Cantonese") -> code ("yue"); unknown or None -> None."""
    if not name:
        return None
    return _NAME_TO_CODE.get(name.strip().lower())


def is_cjk(char: str) -> bool:
    """Han, kana, hangul and CJK punctuation: scripts written without spaces between words."""
    cp = ord(char)
    return (
        0x3000 <= cp <= 0x30FF  # CJK punctuation, hiragana, katakana
        or 0x3400 <= cp <= 0x4DBF or 0x4E00 <= cp <= 0x9FFF or 0xF900 <= cp <= 0xFAFF
        or 0xAC00 <= cp <= 0xD7AF  # hangul syllables
        or 0xFF00 <= cp <= 0xFFEF  # full-width forms (，！？)
        or 0x20000 <= cp <= 0x2FA1F
    )


def join_texts(parts: list[str]) -> str:
    """Join chunk texts: no space where either side of the seam is CJK, one space otherwise."""
    out = ""
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if out and not (is_cjk(out[-1]) or is_cjk(part[0])):
            out += " "
        out += part
    return out


def _is_latin_word(key: str) -> bool:
    return not any(is_cjk(c) for c in key)


def apply_glossary(text: str, glossary: Mapping[str, str]) -> str:
    """Replace heard -> written. Latin-script keys match whole words, case-insensitively; CJK
    keys match as substrings (there are no word boundaries to honour). Longest keys win."""
    if not glossary or not text:
        return text
    keys = sorted(glossary, key=len, reverse=True)
    pattern = "|".join(
        rf"(?<!\w){re.escape(k)}(?!\w)" if _is_latin_word(k) else re.escape(k) for k in keys
    )
    lookup = {k.lower(): v for k, v in glossary.items()}
    return re.sub(pattern, lambda m: lookup.get(m.group(0).lower(), m.group(0)), text, flags=re.IGNORECASE)


def collapse_repetitions(text: str, min_repeats: int = 6, max_unit: int = 12) -> tuple[str, int]:
    """Collapse a unit (1..max_unit words or CJK characters) repeated >= min_repeats times in a row
    into one occurrence — the signature of a decoding loop. Returns (text, units removed).

    Genuine speech rarely repeats the same phrase six times back to back; loops repeat dozens.
    """
    # Tokenise into words (Latin runs), single CJK characters, and whitespace kept for rejoining.
    words = re.findall(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]|[^\s\u3000-\u30ff"
                       r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]+", text)
    if len(words) < min_repeats:
        return text, 0
    norm = [w.lower().strip(".,!?;:") for w in words]
    keep: list[str] = []
    removed = 0
    i = 0
    while i < len(words):
        found = False
        for unit in range(1, max_unit + 1):
            if i + unit * min_repeats > len(words):
                break
            pattern = norm[i:i + unit]
            reps = 1
            while norm[i + reps * unit:i + (reps + 1) * unit] == pattern:
                reps += 1
            if reps >= min_repeats:
                keep.extend(words[i:i + unit])
                removed += (reps - 1) * unit
                i += reps * unit
                found = True
                break
        if not found:
            keep.append(words[i])
            i += 1
    if not removed:
        return text, 0
    return join_texts(keep), removed


def format_clock(seconds: float, *, millis: bool = False, sep: str = ".") -> str:
    """Seconds -> "hh:mm:ss" (or "hh:mm:ss.mmm" with ``millis``; SRT uses sep=",")."""
    total_ms = max(0, round(seconds * 1000))
    h, rem = divmod(total_ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}" if millis else f"{h:02d}:{m:02d}:{s:02d}"


_SENTENCE_END = re.compile(r"(?<=[.!?。！？；;…])\s*")


def split_sentences(text: str, max_chars: int = 84) -> list[str]:
    """Split text into subtitle-sized pieces at sentence ends, then at commas/spaces if too long."""
    pieces: list[str] = []
    for sentence in (s.strip() for s in _SENTENCE_END.split(text)):
        while len(sentence) > max_chars:
            cut = max(sentence.rfind(sep, 0, max_chars) for sep in (", ", "，", "、", " "))
            cut = cut + 1 if cut > max_chars // 3 else max_chars
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    return pieces

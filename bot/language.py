"""The language of the customer's own words (quotes and signatures already removed).

lingua (offline) in its low-accuracy mode over eight common European languages: about
18 MB of memory and 0.07 ms a text, where its high-accuracy models take 289 MB, more than
the whole service may use (tests/benchmarks/language.py measures both, and accuracy).
Being wrong costs differently each way, so the thresholds differ: a request is refused
for its language only when the text is long and the detection sure; a shorter or less sure
text is accepted, and answered in the detected language only when that is fairly clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from bot.given import Given

DETECTED = ("en", "fr", "de", "es", "it", "pt", "nl", "pl")
NAMES = {
    "en": {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian",
           "pt": "Portuguese", "nl": "Dutch", "pl": "Polish"},
    "fr": {"en": "anglais", "fr": "français", "de": "allemand", "es": "espagnol", "it": "italien",
           "pt": "portugais", "nl": "néerlandais", "pl": "polonais"},
}
REFUSE_MIN_CHARS, REFUSE_MIN_CONFIDENCE = 80, 0.9
SAMPLE_CHARS = 1000  # enough to tell a language (measured); detection time grows with the text
QUICK_CHARS = 300  # a first look, trusted only when it finds a served language for sure
SERVED_QUICKLY = ("en", "fr")
ANSWER_MIN_CHARS, ANSWER_MIN_CONFIDENCE = 20, 0.7


def language_name(code: str, in_language: str = "en") -> str:
    return NAMES.get(in_language, NAMES["en"]).get(code, code)


@dataclass(frozen=True)
class Detected:
    code: str | None  # ISO 639-1, None when nothing was detected
    confidence: float
    length: int  # letters considered

    def sure_enough_to_refuse(self) -> bool:
        return self.code is not None and self.length >= REFUSE_MIN_CHARS \
            and self.confidence >= REFUSE_MIN_CONFIDENCE

    def sure_enough_to_answer(self) -> bool:
        return self.code is not None and self.length >= ANSWER_MIN_CHARS \
            and self.confidence >= ANSWER_MIN_CONFIDENCE


def detect(text: str, detector=None) -> Detected:
    """Most mail is plainly English or French from its first lines; only when it is not is
    a longer sample read (time grows with the text), so that an error message quoted in
    another language at the top does not decide. Reads no further than SAMPLE_CHARS."""
    if detector is None:
        known = detected_elsewhere.get(text[:SAMPLE_CHARS])
        if known is not None:
            return known
    detector = detector or _detector()
    quick = _detect(text[:QUICK_CHARS], detector)
    if quick.code in SERVED_QUICKLY and quick.confidence >= REFUSE_MIN_CONFIDENCE and len(text) > QUICK_CHARS:
        return Detected(quick.code, quick.confidence, _letters(text[:SAMPLE_CHARS]))
    return quick if len(text) <= QUICK_CHARS else _detect(text[:SAMPLE_CHARS], detector)


# What detect() gave for these texts (cut to SAMPLE_CHARS) in bot/textworker.py's process.
detected_elsewhere = Given("detected")


def _detect(sample: str, detector) -> Detected:
    letters = _letters(sample)
    values = detector.compute_language_confidence_values(sample) if letters else []
    if not values:
        return Detected(None, 0.0, letters)
    best = values[0]
    return Detected(best.language.iso_code_639_1.name.lower(), round(best.value, 3), letters)


_ASCII_NON_LETTERS = bytes(c for c in range(128) if not chr(c).isalpha())


def _letters(text: str) -> int:
    """How many characters are letters (str.isalpha); ASCII text, most mail, is counted
    in one C call, 40 times faster than character by character."""
    if text.isascii():
        return len(text.encode("ascii").translate(None, _ASCII_NON_LETTERS))
    return sum(map(str.isalpha, text))


@lru_cache(maxsize=1)
def _detector():
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder
    languages = [Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())) for code in DETECTED]
    return LanguageDetectorBuilder.from_languages(*languages).with_low_accuracy_mode().build()

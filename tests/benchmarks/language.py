#!/usr/bin/env python3
"""Language detection: memory, speed and accuracy of lingua's two modes on our mail.

    PYTHONPATH=tests python tests/benchmarks/language.py [--mails 600]

Texts: the customer's own words (quotes and signatures removed by bot.mailparse) of the
ingest benchmark's English mails and of French/English replies (tests/benchmarks/parse.py),
plus hand-written requests in six languages we do not serve (tests/data/languages/).
For each mode it prints the RSS the models add, ms per text, and how often the decision
bot/language.py takes would be right: answering EN/FR in the right language, refusing
only other languages. High-accuracy mode is measured in a child process, since it holds
its 289 MB until exit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def corpus(n: int) -> list[tuple[str, str]]:
    from parse import ingest_mails, reply_mails

    from bot.mailparse import parse
    texts = []
    for raw in ingest_mails(n, 1):
        mail = parse(raw)
        texts.append(("en", f"{mail.subject}\n{mail.text}"))
    for raw in reply_mails(n, 2):
        mail = parse(raw)
        texts.append((_label(mail.text), f"{mail.subject}\n{mail.text}"))
    for line in (HERE.parent / "data" / "languages" / "other.txt").read_text(encoding="utf-8").splitlines():
        code, text = line.split("\t", 1)
        texts.append((code, text))
    return texts


FRENCH = {"le", "la", "les", "de", "des", "est", "nous", "vous", "une", "pour", "pas", "et", "dans", "sur"}
ENGLISH = {"the", "is", "we", "you", "a", "for", "not", "and", "in", "on", "our", "to", "of", "it"}


def _label(text: str) -> str:
    """The truth for generated replies: which language's common words the new text uses."""
    words = text.lower().split()
    return "fr" if sum(w in FRENCH for w in words) > sum(w in ENGLISH for w in words) else "en"


def measure(mode: str, n: int) -> dict:
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    import bot.language as lang

    def rss() -> float:
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024

    texts = corpus(n)
    before = rss()
    languages = [Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())) for c in lang.DETECTED]
    builder = LanguageDetectorBuilder.from_languages(*languages)
    builder = builder.with_low_accuracy_mode() if mode == "low" else builder
    detector = builder.with_preloaded_language_models().build()
    added = rss() - before
    right = refused_wrongly = answered_wrongly = others_refused = others = 0
    started = time.perf_counter()
    for truth, text in texts:
        found = lang.detect(text, detector)  # the service's own sampling, with this mode's models
        served = truth in ("en", "fr")
        if served:
            refused_wrongly += found.sure_enough_to_refuse() and found.code not in ("en", "fr")
            answered = found.code if found.sure_enough_to_answer() and found.code in ("en", "fr") else None
            answered_wrongly += answered is not None and answered != truth
            right += answered == truth
        else:
            others += 1
            others_refused += found.sure_enough_to_refuse() and found.code not in ("en", "fr")
    seconds = time.perf_counter() - started
    served_texts = len(texts) - others
    return {"mode": mode, "rss_mb": round(added, 1), "ms_per_text": round(seconds * 1000 / len(texts), 3),
            "en_fr_texts": served_texts, "answered_in_their_language": right,
            "answered_in_the_wrong_language": answered_wrongly, "en_fr_refused_wrongly": refused_wrongly,
            "other_texts": others, "other_refused": others_refused}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=600)
    parser.add_argument("--child", choices=("low", "high"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.mails)))
        return 0
    for mode in ("low", "high"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--mails", str(args.mails)],
                             capture_output=True, text=True, check=True).stdout
        figures = json.loads(out.strip().splitlines()[-1])
        print(f"{mode:>4} accuracy mode: +{figures['rss_mb']} MB RSS, {figures['ms_per_text']} ms/text; "
              f"EN/FR texts {figures['en_fr_texts']}: {figures['answered_in_their_language']} answered in "
              f"their language, {figures['answered_in_the_wrong_language']} in the wrong one, "
              f"{figures['en_fr_refused_wrongly']} refused wrongly; other languages "
              f"{figures['other_refused']}/{figures['other_texts']} refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())

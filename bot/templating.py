"""Jinja2 mail templates: templates/<language>/<name>/{subject.txt, body.txt, body.html}.

The operator's folder is searched first, then the shipped one; a language without its own
template falls back to English.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from bot.resources import shipped_dir

FALLBACK_LANGUAGE = "en"


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


class Templates:
    def __init__(self, folder: Path | None = None) -> None:
        folders = [folder] if folder else []
        folders.append(shipped_dir("templates"))
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(f) for f in folders]),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
        )

    def render(self, name: str, language: str, context: dict) -> RenderedMail:
        parts = [self._template(name, language, part).render(context)
                 for part in ("subject.txt", "body.txt", "body.html")]
        subject = " ".join(parts[0].split())
        return RenderedMail(subject, parts[1].strip() + "\n", parts[2])

    def _template(self, name: str, language: str, part: str) -> jinja2.Template:
        try:
            return self._env.get_template(f"{language}/{name}/{part}")
        except jinja2.TemplateNotFound:
            return self._env.get_template(f"{FALLBACK_LANGUAGE}/{name}/{part}")

    def names(self) -> list[str]:
        return sorted(self._env.list_templates())

"""Jinja2 mail templates: templates/<language>/<name>/{subject.txt, body.txt, body.html}.

The operator's folder is searched first, then the shipped one; a language without its own
template falls back to English.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from bot.config import LocatedError
from bot.resources import shipped_dir

FALLBACK_LANGUAGE = "en"
LANGUAGES = ("en", "fr")
PARTS = ("subject.txt", "body.txt", "body.html")
# What every mail template may use; check() renders each one with it at start-up.
SAMPLE_CONTEXT = {"ticket": {"id": 1, "reference": "SUP-000001"}, "original_subject": "Sample subject",
                  "recipient_name": "Sample Customer", "from_name": "Support",
                  "requester": "someone@customer.example", "customer_name": "Sample Customer Ltd",
                  "reasons": ["invoice INV-1001, due 31 March 2026, is unpaid"],
                  "exclusions": ["Support on site."], "severity": "High",
                  "deadline": "Tuesday 24 November 2026, 10:00 (UTC+1)", "response_time": "1 business day"}


class TemplateError(LocatedError):
    """A mail template that does not compile or render: file, line and what is wrong."""


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


def _body_of(html: str) -> str:
    start, end = html.find("<body>"), html.rfind("</body>")
    return html[start + len("<body>"):end] if start >= 0 and end > start else html


class Templates:
    def __init__(self, folder: Path | None = None) -> None:
        folders = [folder] if folder else []
        folders.append(shipped_dir("templates"))
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(f) for f in folders]),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            # What check() passed at start-up is what runs: an edit takes effect on restart,
            # and no file is looked at again for each mail (a stat per part and mail).
            auto_reload=False,
        )
        self._chosen: dict[tuple[str, str, str], jinja2.Template] = {}

    def render(self, name: str, language: str, context: dict) -> RenderedMail:
        parts = [self._template(name, language, part).render(context) for part in PARTS]
        subject = " ".join(parts[0].split())
        return RenderedMail(subject, parts[1].strip() + "\n", parts[2])

    def render_in(self, name: str, languages: list[str], context_for) -> RenderedMail:
        """One mail in one language, or in several one after the other (for a customer
        whose language we do not serve: English, then French)."""
        mails = [self.render(name, language, context_for(language)) for language in languages]
        if len(mails) == 1:
            return mails[0]
        html = "".join(_body_of(m.html) for m in mails[1:])
        return RenderedMail(" / ".join(dict.fromkeys(m.subject for m in mails)),
                            "\n-----\n\n".join(m.text for m in mails),
                            mails[0].html.replace("</body>", f"<hr>{html}</body>", 1))

    def _template(self, name: str, language: str, part: str) -> jinja2.Template:
        key = (name, language, part)
        if key not in self._chosen:
            try:
                self._chosen[key] = self._env.get_template(f"{language}/{name}/{part}")
            except jinja2.TemplateNotFound:
                self._chosen[key] = self._env.get_template(f"{FALLBACK_LANGUAGE}/{name}/{part}")
        return self._chosen[key]

    def mail_names(self) -> list[str]:
        return sorted({path.split("/")[1] for path in self._env.list_templates() if path.count("/") == 2})

    def check(self) -> None:
        """Compile and render every mail in every language now, so that an edited template
        that is broken stops start-up with its file and line instead of failing on mail."""
        for name in self.mail_names():
            for language in LANGUAGES:
                for part in PARTS:
                    self._check_one(name, language, part)

    def _check_one(self, name: str, language: str, part: str) -> None:
        try:
            self._template(name, language, part).render(SAMPLE_CONTEXT)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(error.filename or f"{language}/{name}/{part}", error.lineno, "",
                                error.message or "syntax error") from error
        except jinja2.TemplateError as error:
            template = self._template(name, language, part)
            raise TemplateError(template.filename or f"{language}/{name}/{part}", None, "",
                                f"{error} (a template can use: {', '.join(SAMPLE_CONTEXT)})") from error

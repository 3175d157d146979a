"""``report.pdf``: the audit trail's facts set for a person — a French controller by default.

Made with fpdf2 (a maintained PDF library), in DejaVu Sans when the font is installed
(Debian's ``fonts-dejavu-core``: every character of French and of names), else in the PDF
core Helvetica, which covers Latin-1. The words are in :data:`WORDS`, French and English.
Signing is :mod:`daemon.audit.pdf_signing`.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path
from typing import Any, Final

from fpdf import FPDF
from fpdf.enums import XPos, YPos

FONT_DIR: Final = Path("/usr/share/fonts/truetype/dejavu")

WORDS: Final[dict[str, dict[str, Any]]] = {
    "fr": {
        "title": "Piste d'audit — relevé de présence",
        "establishment": "Établissement",
        "vault": "Coffre",
        "requested_by": "Demandée par",
        "funder": "Financeur",
        "file": "Référence du dossier",
        "generated": "Produite le",
        "scope": "Périmètre",
        "period": "Période",
        "student": "Stagiaire",
        "born": "né(e) le",
        "session": "Séance",
        "action": "Action de formation",
        "all": "toutes dates",
        "date": "Date",
        "slot": "Créneau",
        "morning": "matin",
        "afternoon": "après-midi",
        "trainer": "Formateur",
        "status": "Statut",
        "signature": "Signature du stagiaire",
        "counter": "Contre-signature",
        "hours": "Heures",
        "none": "—",
        "totals": "Heures prévues {p} h · réalisées {a} h · manquées {m} h",
        "history": "Historique des séances et corrections",
        "no_history": "Aucune séance déplacée ou annulée, aucune correction.",
        "controls": "Contrôles",
        "no_findings": "Aucun des contrôles n'a relevé d'anomalie.",
        "entries": "entrées",
        "verify": "Comment vérifier",
        "verify_text": (
            "Chaque entrée de cette piste est scellée par un jeton d'horodatage RFC 3161 et "
            "incluse dans un arbre de Merkle (RFC 9162) dont la racine est signée par le coffre "
            "(point de contrôle de {size} entrées, racine {root}). Les heures de signature "
            "ci-dessus sont celles des jetons, avec la précision qu'ils garantissent. Pour tout "
            "vérifier sans faire confiance au coffre : décompressez la piste et lancez "
            "« python3 check.py . --ca RACINES.pem » (Python 3 et OpenSSL suffisent) ; "
            "VERIFY.md donne aussi chaque commande openssl. Ce document est signé (PAdES) et "
            "horodaté : un lecteur PDF montre s'il a été modifié."
        ),
        "moved": "séance {sid} déplacée : version {v}, {start} – {end}",
        "cancelled": "séance {sid} annulée",
        "correction": "correction de l'entrée {c} : {reason} ({author})",
        "entry": "entrée",
        "status_words": {
            "present": "présent",
            "late": "en retard ({minutes} min)",
            "left_early": "parti(e) en avance ({minutes} min)",
            "absent": "absent",
            "justified": "absence justifiée",
            "no_signature": "aucune signature",
            "cancelled": "séance annulée",
        },
        "page": "page {n}",
        "decimal": ",",
        "destroyed": "Stagiaires dont les données personnelles ont été détruites (fin de la durée "
        "de conservation) : leurs émargements restent prouvés, sans les nommer",
    },
    "en": {
        "title": "Audit trail — attendance record",
        "establishment": "Establishment",
        "vault": "Vault",
        "requested_by": "Requested by",
        "funder": "Funder",
        "file": "File reference",
        "generated": "Generated",
        "scope": "Scope",
        "period": "Period",
        "student": "Trainee",
        "born": "born",
        "session": "Session",
        "action": "Training action",
        "all": "all dates",
        "date": "Date",
        "slot": "Slot",
        "morning": "morning",
        "afternoon": "afternoon",
        "trainer": "Trainer",
        "status": "Status",
        "signature": "Trainee's signature",
        "counter": "Counter-signature",
        "hours": "Hours",
        "none": "—",
        "totals": "Hours planned {p} h · attended {a} h · missed {m} h",
        "history": "Sessions' history and corrections",
        "no_history": "No session moved or cancelled, no correction.",
        "controls": "Controls",
        "no_findings": "None of the controls found anything.",
        "entries": "entries",
        "verify": "How to verify",
        "verify_text": (
            "Every entry of this trail is sealed by an RFC 3161 time-stamp token and included "
            "in a Merkle tree (RFC 9162) whose root the vault signed (checkpoint of {size} "
            "entries, root {root}). Signature times above are the tokens', with the accuracy "
            "they state. To check it all without trusting the vault: unzip the trail and run "
            "'python3 check.py . --ca ROOTS.pem' (Python 3 and OpenSSL are enough); VERIFY.md "
            "also gives each openssl command. This document is signed (PAdES) and "
            "time-stamped: a PDF reader shows whether it was changed."
        ),
        "moved": "session {sid} moved: version {v}, {start} – {end}",
        "cancelled": "session {sid} cancelled",
        "correction": "correction of entry {c}: {reason} ({author})",
        "entry": "entry",
        "status_words": {
            "present": "present",
            "late": "late ({minutes} min)",
            "left_early": "left early ({minutes} min)",
            "absent": "absent",
            "justified": "absence justified",
            "no_signature": "no signature",
            "cancelled": "session cancelled",
        },
        "page": "page {n}",
        "decimal": ".",
        "destroyed": "Trainees whose personal data was destroyed (retention ended): their "
        "sign-ins stay proven, without naming them",
    },
}


class AuditPdf(FPDF):
    """An A4 page in DejaVu Sans (or Helvetica), a footer with the page number: the report's
    and the certificate's."""

    def __init__(self, words: dict[str, Any], footer_text: str, orientation: str = "L") -> None:
        super().__init__(orientation=orientation, unit="mm", format="A4")
        self.words = words
        self.footer_text = footer_text
        self.family = "Helvetica"
        if (FONT_DIR / "DejaVuSans.ttf").exists():
            self.add_font("DejaVu", "", str(FONT_DIR / "DejaVuSans.ttf"))
            self.add_font("DejaVu", "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
            self.family = "DejaVu"
        self._widths: dict[tuple[str, float, str], float] = {}
        self.set_auto_page_break(auto=True, margin=15)
        self.set_margins(12, 12, 12)

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font(self.family, "", 7)
        self.cell(0, 5, f"{self.footer_text} — {self.words['page'].format(n=self.page_no())}",
                  align="C")  # fmt: skip

    # fpdf2's multi_cell() and table() measure the text of every candidate line break
    # character by character: seconds for a year of half-days (benchmarks/RESULTS.md), and
    # quadratic in a paragraph's length (a finding citing hundreds of entries). These
    # measure each distinct word once (the report's words repeat: times, statuses).

    def _width(self, word: str) -> float:
        key = (self.font_style, self.font_size_pt, word)
        w = self._widths.get(key)
        if w is None:
            w = self._widths[key] = self.get_string_width(word)
        return w

    def wrap(self, text: str, room: float) -> list[str]:
        """``text`` in lines no wider than ``room`` (mm), broken at spaces."""
        lines: list[str] = []
        current, used = "", 0.0
        space = self._width(" ")
        for word in text.split(" "):
            w = self._width(word)
            if current and used + space + w > room:
                lines.append(current)
                current, used = word, w
            else:
                used += (space if current else 0.0) + w
                current = f"{current} {word}" if current else word
        lines.append(current)
        return lines

    def paragraph(self, text: str, line: float = 5) -> None:
        """A wrapped paragraph across the page, breaking pages as it goes."""
        for part in self.wrap(text, self.epw):
            self.cell(0, line, part, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def table_fast(
        self, widths: tuple[float, ...], head: list[str], rows: list[list[str]], line: float = 4.5
    ) -> None:
        """A bordered table, the header repeated on each page, cells wrapped at spaces."""
        pad = 1.0

        def draw(cells: list[str], bold: bool) -> None:
            self.set_font(self.family, "B" if bold else "", self.font_size_pt)
            wrapped = [self.wrap(c, w - 2 * pad) for c, w in zip(cells, widths, strict=True)]
            height = max(len(ls) for ls in wrapped) * line + 2 * pad
            if self.get_y() + height > self.page_break_trigger:
                self.add_page()
                if not bold:
                    draw(head, True)
                    self.set_font(self.family, "", self.font_size_pt)
            x, y = self.l_margin, self.get_y()
            baseline = (line + self.font_size * 0.7) / 2  # text() places the baseline
            for lines, w in zip(wrapped, widths, strict=True):
                self.rect(x, y, w, height)
                for k, text in enumerate(lines):
                    if text:  # text(): no cell machinery, a tenth of cell()'s cost here
                        self.text(x + pad, y + pad + k * line + baseline, text)
                x += w
            self.set_xy(self.l_margin, y + height)

        draw(head, True)
        for row in rows:
            draw(row, False)

    def text_(self, s: str) -> str:
        if self.family == "Helvetica":  # the core font: Latin-1 only
            return s.replace("—", "-").replace("–", "-").replace("·", "-").replace("’", "'") \
                .encode("latin-1", "replace").decode("latin-1")  # fmt: skip
        return s


def _local(text: str | None, like: str) -> str:
    """A token's UTC time in the session's own offset, as a person reads it."""
    if text is None:
        return "—"
    offset = dt.datetime.fromisoformat(like).tzinfo
    return dt.datetime.fromisoformat(text).astimezone(offset).strftime("%H:%M:%S")


def _n(x: float, words: dict[str, Any]) -> str:
    """A number as the reader writes it: 2,8 in French, 2.8 in English."""
    return f"{x:g}".replace(".", words["decimal"])


def _when(text: str) -> str:
    return dt.datetime.fromisoformat(text).strftime("%d/%m/%Y %H:%M:%S UTC")


def _signed(s: dict[str, Any] | None, like: str, words: dict[str, Any]) -> str:
    if s is None:
        return str(words["none"])
    when = _local(s["gen_time"], like)
    acc = "" if s["accuracy_s"] is None else f" ±{_n(s['accuracy_s'], words)} s"
    how = f" ({s['capture']})" if s.get("capture") else ""
    return f"{when}{acc}{how} [{words['entry']} {s['entry']}]"


def _status(status: dict[str, Any], words: dict[str, Any]) -> str:
    text: str = words["status_words"][status["code"]].format(minutes=status.get("minutes"))
    return text


def render_report(report: dict[str, Any], language: str = "fr") -> bytes:
    """The report as PDF bytes (unsigned)."""
    words = WORDS[language]
    scope = report["scope"]
    pdf = AuditPdf(words, f"{report['vault']} · {_when(report['generated_at'])}")
    t = pdf.text_
    pdf.add_page()
    pdf.set_title(t(words["title"]))
    pdf.set_author(t(report["vault"]))
    pdf.set_font(pdf.family, "B", 16)
    pdf.cell(0, 10, t(words["title"]), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(pdf.family, "", 10)
    request = report["request"]
    students = {
        (r["student"]["ine"], r["student"]["birth_date"]): r["student"] for r in report["half_days"]
    }
    if scope["kind"] == "student":
        who = scope["student"]
        named = students.get((who["ine"], who["birth_date"]), {})
        name = named.get("name") or ""
        what = (
            f"{words['student']} : {name} (INE {who['ine']}, {words['born']} {who['birth_date']})"
        )
        if scope.get("training_action"):
            what += f" — {words['action']} : {scope['training_action']}"
    elif scope["kind"] == "session":
        what = f"{words['session']} {scope['session']}"
    else:
        what = f"{words['action']} : {scope['training_action']}"
    period = (
        words["all"]
        if not (scope["from"] or scope["to"])
        else f"{scope['from'] or '…'} – {scope['to'] or '…'}"
    )
    facts = [
        (words["establishment"], scope["establishment"]),
        (words["scope"], what),
        (words["period"], period),
        (words["funder"], request.get("funder") or words["none"]),
        (words["file"], request.get("file_reference") or words["none"]),
        (words["requested_by"], request["requested_by"]),
        (words["vault"], report["vault"]),
        (words["generated"], _when(report["generated_at"])),
    ]
    for label, value in facts:
        pdf.set_font(pdf.family, "B", 10)
        pdf.cell(55, 6, t(label))
        pdf.set_font(pdf.family, "", 10)
        pdf.cell(0, 6, t(str(value)), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)
    by_student: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in report["half_days"]:
        by_student[(r["student"]["ine"] or "", r["student"]["birth_date"] or "")].append(r)
    for (ine, birth), rows in sorted(by_student.items()):
        name = rows[0]["student"].get("name") or ""
        heading = f"{words['student']} : {name} — INE {ine}, {words['born']} {birth}"
        if rows[0]["student"].get("destroyed"):
            heading = words["destroyed"]
        pdf.set_font(pdf.family, "B", 11)
        pdf.cell(0, 8, t(heading), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font(pdf.family, "", 8)
        head = [
            words[k]
            for k in (
                "date",
                "slot",
                "session",
                "trainer",
                "status",
                "signature",
                "counter",
                "hours",
            )
        ]
        body = []
        for r in rows:
            day = dt.date.fromisoformat(r["date"]).strftime("%d/%m/%Y")
            title = r.get("title") or r["training_action"]
            hours_span = f"{r['start'][11:16]}–{r['end'][11:16]}"  # the session's local times
            session = f"{r['session']} v{r['version']} — {title}, {hours_span}"
            trainer = r["trainer"].get("name") or r["trainer"].get("id") or words["none"]
            hours = f"{_n(r['hours_attended'], words)} / {_n(r['hours_planned'], words)}"
            body.append([t(str(c)) for c in (
                day, words[r["slot"]], session, trainer, _status(r["status"], words),
                _signed(r["signature"], r["start"], words),
                _signed(r["counter_signature"], r["start"], words), hours,
            )])  # fmt: skip
        pdf.table_fast((20, 18, 50, 32, 32, 50, 50, 21), [t(h) for h in head], body)
        pdf.ln(2)
    totals = report["totals"]
    pdf.set_font(pdf.family, "B", 10)
    summary = words["totals"].format(
        p=_n(totals["hours_planned"], words),
        a=_n(totals["hours_attended"], words),
        m=_n(totals["hours_missed"], words),
    )
    pdf.cell(0, 7, t(summary), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    _section(pdf, words["history"])
    lines = []
    for r in report["half_days"]:
        for h in r["history"]:
            if h["kind"] == "session_moved":
                now = h["now"]
                lines.append(
                    words["moved"].format(
                        sid=r["session"], v=now["version"], start=now["start"], end=now["end"]
                    )
                )
            elif h["kind"] == "session_cancelled":
                lines.append(words["cancelled"].format(sid=r["session"]))
            else:
                author = (
                    (h.get("author") or {}).get("name") or (h.get("author") or {}).get("id") or ""
                )
                lines.append(
                    words["correction"].format(c=h["corrects"], reason=h["reason"], author=author)
                )
    for line in dict.fromkeys(lines) or [words["no_history"]]:
        pdf.paragraph(t("• " + line))
    _section(pdf, words["controls"])
    for f in report["controls"] or [None]:
        if f is None:
            text = words["no_findings"]
        else:
            cited = ", ".join(map(str, f["entries"]))
            text = f"{f['title']} — {f['detail']} ({words['entries']} {cited})"
        pdf.paragraph(t("• " + text))
    _section(pdf, words["verify"])
    cp = report["checkpoint"]
    pdf.paragraph(t(words["verify_text"].format(size=cp["size"], root=cp["root"])))
    return bytes(pdf.output())


def _section(pdf: AuditPdf, title: str) -> None:
    pdf.ln(3)
    pdf.set_font(pdf.family, "B", 11)
    pdf.cell(0, 7, pdf.text_(title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(pdf.family, "", 9)

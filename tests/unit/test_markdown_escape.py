"""Client text in Prefect markdown artifacts (packet, stage forms) stays inert text."""

from __future__ import annotations

import pytest

from tasks.mail.render import markdown_escape, render_page

HOSTILE = ("<img src=x onerror=alert(1)> [click](javascript:alert(1)) **bold** | pipe\n"
           "# heading")


@pytest.mark.parametrize(("raw", "expected"), [
    ("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"),
    ("[a](b)", r"\[a\]\(b\)"),
    ("a|b", r"a\|b"),
    ("line\n# two", r"line \# two"),
    ("Tom & Jerry", "Tom &amp; Jerry"),
])
def test_markdown_escape(raw: str, expected: str) -> None:
    assert markdown_escape(raw) == expected


def test_packet_markdown_cannot_carry_html_or_links() -> None:
    markdown = render_page("packet.md", {
        "client": {"name": HOSTILE, "offer": "o", "segment": "s"},
        "packet": {"revision": 1, "sections": [
            {"title": "Client profile and objectives", "rows": [("Objectives", HOSTILE)]}]},
    })
    assert "<img" not in markdown and "](javascript" not in markdown
    assert "&lt;img src=x onerror=alert\\(1\\)&gt;" in markdown
    table_rows = [line for line in markdown.splitlines() if line.startswith("| Objectives")]
    assert len(table_rows) == 1 and table_rows[0].count(" | ") == 1  # the pipe did not split it


def test_stage_form_description_escapes_client_names() -> None:
    text = render_page("stage_form.md", {"stage": "Intake completion", "client": HOSTILE,
                                         "problems": ["missing artifacts x"], "error": None})
    assert "<img" not in text and "](javascript" not in text

"""The results site: static HTML pages over the committed reports, written by `report --committed` into
results/site/. It works offline (no CDN, no server: open results/site/index.html); every figure says which rows and
which commits it was drawn from, and every table sorts by a click on its header.

    index.html      the headline figure, the headline readings, the claims ledger's verdicts, the pages
    claims.html     the paper's claims ledger (reports/claims.py)
    speed.html      speed and memory curves and tables, one section per committed timing report
    accuracy.html   accuracy tables with their intervals and verdicts, accuracy by history length
    longrange.html  how far back each mechanism looks: heatmap-style tables and curves

Pages are rendered from the reports' own Markdown (the small subset they use), so the site never says anything
the reports do not.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

from .rows import read_rows

PAGES = {  # page -> (title, the committed reports it shows)
    "speed.html": ("Speed and memory", None),  # None: every timing report
    "accuracy.html": ("Accuracy", ["accuracy"]),
    "longrange.html": ("Long histories", ["longrange"]),
    "claims.html": ("The paper's claims", ["claims"]),
}
NOT_TIMING = {"accuracy", "longrange", "claims"}

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 0 1.2em 3em; color: #222; }
nav { padding: .8em 0; border-bottom: 1px solid #ddd; margin-bottom: 1em; }
nav a { margin-right: 1.2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; cursor: pointer; user-select: none; }
th.sorted-asc::after { content: " ▲"; } th.sorted-desc::after { content: " ▼"; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 12px; color: #555; }
code { background: #f5f5f5; padding: 0 .2em; }
"""

# sorts a table by the clicked column: numbers by value (the first number in a cell), the rest as text
SORT_SCRIPT = """
function cellKey(text) {
  const match = text.replace(/,/g, "").match(/[-+]?\\d*\\.?\\d+(e[-+]?\\d+)?/i);
  return match ? [0, parseFloat(match[0]), text] : [1, 0, text];
}
function compareKeys(a, b) {
  if (a[0] !== b[0]) return a[0] - b[0];
  if (a[0] === 0 && a[1] !== b[1]) return a[1] - b[1];
  return a[2].localeCompare(b[2]);
}
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (header, column) {
    header.addEventListener("click", function () {
      const body = table.tBodies[0];
      const ascending = !header.classList.contains("sorted-asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
      header.classList.add(ascending ? "sorted-asc" : "sorted-desc");
      const rows = Array.from(body.rows);
      rows.sort(function (a, b) {
        const order = compareKeys(cellKey(a.cells[column].textContent), cellKey(b.cells[column].textContent));
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


# ------------------------------------------------------------------ Markdown -> HTML (the reports' subset)


def _inline(text: str, relink) -> str:
    """Escape, then `code`, **bold**, ![image](src) and [link](href) (targets rewritten by `relink`)."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        part = html.escape(part, quote=False)
        part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
        part = re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"<em>\1</em>", part)
        part = re.sub(
            r"!\[([^\]]*)\]\(([^)\s]+)\)", lambda m: f'<img src="{relink(m.group(2))}" alt="{m.group(1)}">', part
        )
        part = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", lambda m: f'<a href="{relink(m.group(2))}">{m.group(1)}</a>', part)
        out.append(part)
    return "".join(out)


def _table_html(lines: list[str], relink) -> str:
    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    header = "".join(f"<th>{_inline(c, relink)}</th>" for c in cells(lines[0]))
    body = "".join(
        "<tr>" + "".join(f"<td>{_inline(c, relink)}</td>" for c in cells(line)) + "</tr>\n" for line in lines[2:]
    )
    return f'<table class="sortable"><thead><tr>{header}</tr></thead>\n<tbody>\n{body}</tbody></table>'


def markdown_html(text: str, relink=lambda target: target, shift: int = 0) -> str:
    """The Markdown the reports write (headings, paragraphs, lists, pipe tables, images, links, code) as HTML;
    `shift` moves headings down (a report's '#' under a page's own title)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + shift, 6)
            blocks.append(f"<h{level}>{_inline(line.lstrip('#').strip(), relink)}</h{level}>")
            i += 1
        elif line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1].replace("|", "").strip()) <= set("-: "):
            table = []
            while i < len(lines) and lines[i].startswith("|"):
                table.append(lines[i])
                i += 1
            blocks.append(_table_html(table, relink))
        elif line.lstrip().startswith(("- ", "* ")):
            items = []
            while i < len(lines) and lines[i].lstrip().startswith(("- ", "* ")):
                items.append(f"<li>{_inline(lines[i].lstrip()[2:], relink)}</li>")
                i += 1
            blocks.append("<ul>" + "".join(items) + "</ul>")
        else:
            paragraph = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|", "- ")):
                paragraph.append(lines[i])
                i += 1
            blocks.append(f"<p>{_inline(' '.join(paragraph), relink)}</p>")
    return "\n".join(blocks)


# ------------------------------------------------------------------ pages


def _relinker(source_folder: Path, site: Path):
    """Rewrites a link written relative to `source_folder` so that it works from the site's folder."""

    def relink(target: str) -> str:
        if re.match(r"^[a-z]+:|^#|^/", target):
            return target
        return Path(os.path.relpath(source_folder / target, site)).as_posix()

    return relink


def _page(title: str, body: str) -> str:
    links = " ".join(f'<a href="{name}">{page_title}</a>' for name, (page_title, _) in PAGES.items())
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} · linrec-bench results</title><style>{STYLE}</style></head>\n"
        f'<body><nav><a href="index.html"><strong>linrec-bench</strong></a> {links}</nav>\n'
        f"<h1>{html.escape(title)}</h1>\n{body}\n<script>{SORT_SCRIPT}</script>\n</body></html>\n"
    )


def _provenance(root: Path, sources: list[Path], site: Path) -> str:
    """'rows: a.jsonl, b.jsonl · commits: …' for the figures of a report."""
    commits = set()
    for path in sources:
        for row in read_rows(path):
            commit = row.get("run_commit") or row.get("commit")
            if commit:
                commits.add(str(commit)[:12])
    rows = ", ".join(
        f'<a href="{Path(os.path.relpath(p, site)).as_posix()}">{html.escape(p.name)}</a>' for p in sources
    )
    shown = ", ".join(f"<code>{c}</code>" for c in sorted(commits)[:6]) + (" …" if len(commits) > 6 else "")
    return f"rows: {rows} · commits: {shown or 'not recorded'}"


def _report_section(name: str, folder: Path, root: Path, site: Path) -> str:
    """One committed report: its Markdown pages rendered, then every figure not already shown, each captioned with
    the rows and commits behind it."""
    from .committed import committed_sources

    sources = [p for p in committed_sources(name, root) if p.suffix == ".jsonl"] if name != "claims" else []
    caption = _provenance(root, sources, site) if sources else "rows: see the table"
    relink = _relinker(folder, site)
    parts = [f'<section id="{html.escape(name)}"><h2>{html.escape(name)}</h2>', f"<p><small>{caption}</small></p>"]
    shown = set()
    for page in sorted(folder.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        shown |= set(re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text))
        parts.append(markdown_html(text, relink, shift=2))
    for figure in sorted(folder.glob("*.png")):
        if figure.name not in shown:
            parts.append(
                f'<figure><img src="{relink(figure.name)}" alt="{html.escape(figure.stem)}">'
                f"<figcaption>{html.escape(figure.stem)} · {caption}</figcaption></figure>"
            )
    return "\n".join(parts) + "</section>"


def _index(root: Path, site: Path, reports: Path) -> str:
    from .claims import claims, ledger_table
    from .readme import accuracy_section, mixers_section, pareto_section, short_n_section
    from .style import pipe_table

    relink = _relinker(root, site)
    headline = "\n".join(pareto_section(root))
    readings = [accuracy_section(root), short_n_section(root), mixers_section(root)]
    verdicts = ledger_table(claims(root), link_prefix="")[["claim", "verdict", "rows"]]
    body = [
        "<p>Efficient attention for sequential recommenders, measured: LinRec (Liu et al., SIGIR 2023) and its "
        "rivals under one interface. Everything below is generated from the committed rows by "
        "<code>python -m bench report --committed</code>.</p>",
        markdown_html(headline, relink),
        *[markdown_html("\n".join(section), relink) for section in readings if section],
        "<h2>The paper's claims</h2>",
        markdown_html(pipe_table(verdicts), relink),
        '<p><a href="claims.html">The ledger, with what was measured</a></p>',
        "<h2>Pages</h2><ul>"
        + "".join(f'<li><a href="{name}">{title}</a></li>' for name, (title, _) in PAGES.items())
        + "</ul>",
    ]
    return _page("linrec-bench results", "\n".join(body))


def build_site(root: Path, reports: Path | None = None, site: Path | None = None) -> list[Path]:
    """results/site/ from the committed reports under `reports` (default results/reports)."""
    reports = reports or root / "reports"
    site = site or root / "site"
    site.mkdir(parents=True, exist_ok=True)
    from .committed import COMMITTED_REPORTS

    written = [site / "index.html"]
    (site / "index.html").write_text(_index(root, site, reports), encoding="utf-8")
    timing = [name for name in COMMITTED_REPORTS if name not in NOT_TIMING]
    for page, (title, names) in PAGES.items():
        sections = [
            _report_section(name, reports / name, root, site)
            for name in (names if names is not None else timing)
            if (reports / name).is_dir()
        ]
        (site / page).write_text(_page(title, "\n".join(sections)), encoding="utf-8")
        written.append(site / page)
    (site / "pages.json").write_text(json.dumps([p.name for p in written], indent=1) + "\n", encoding="utf-8")
    return written + [site / "pages.json"]

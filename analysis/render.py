"""Writers of a formatted table (a DataFrame of strings) as CSV, Markdown, LaTeX and HTML.

Written here rather than with ``DataFrame.to_markdown``/``to_latex``, which need tabulate and
jinja2, so that the report needs only pandas and matplotlib.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

#: characters of the formatted cells and their LaTeX spelling (amssymb for \checkmark)
_LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$", "†": r"$^\dagger$", "–": "--", "✓": r"\checkmark",
    "✗": r"$\times$", "ρ": r"$\rho$", "≥": r"$\geq$", "Δ": r"$\Delta$", ">": r"$>$", "<": r"$<$",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def to_markdown(table: pd.DataFrame) -> str:
    def row(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [row(table.columns), "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += [row(r) for r in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, caption: str) -> str:
    lines = [
        r"\begin{table}[t]", r"\centering", r"\small",
        r"\begin{tabular}{" + "l" * len(table.columns) + "}", r"\toprule",
        " & ".join(latex_escape(c) for c in table.columns) + r" \\", r"\midrule",
    ]
    lines += [" & ".join(latex_escape(c) for c in r) + r" \\" for r in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + latex_escape(caption) + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_html(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in table.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_table(table: pd.DataFrame, out_dir: Path, stem: str, caption: str) -> list[Path]:
    """``stem``.csv, .md and .tex in ``out_dir``; returns their paths."""
    paths = [out_dir / f"{stem}.{ext}" for ext in ("csv", "md", "tex")]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(f"{caption}\n\n{to_markdown(table)}", encoding="utf-8")
    paths[2].write_text(to_latex(table, caption), encoding="utf-8")
    return paths


def number(mean: float, std: float = float("nan"), digits: int = 1) -> str:
    """One decimal as in the paper; ``mean±std`` where a std exists (several seeds); "–" for none."""
    if pd.isna(mean):
        return "–"
    return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f}±{std:.{digits}f}"

"""Table 3 (SuperPos paper appendix A.1 and A.2): SuperPos PT on the original T5 Base checkpoint
and on T5v1.1 LM-adapted, with and without softmax on the superposition weights.

The paper's rows: T5 Base (``t5-base``) without softmax; T5v1.1 Small LM-adapted without and
with softmax; T5v1.1 Base LM-adapted without softmax (A.2 ran softmax on Small only). Any other
(model, softmax) cell of SuperPos runs without dropout in the experiment (``softmax.yaml`` also
runs softmax on T5v1.1 Base) is shown too, marked as an extension. The ATTEMPT and Residual PT
rows of the paper's Table 3 come from their own papers and the GPT-3.5 row is not a prompt
tuning run: none of them is built here. Cells as in Table 1 (best validation score, percent).
"""

from __future__ import annotations

import pandas as pd

from analysis.table1 import best_evaluations, row_scores, table1, table1_values

#: (model, softmax) of the SuperPos rows the paper's Table 3 reports
PAPER_ROWS = {
    ("t5-base", False), ("google/t5-small-lm-adapt", False), ("google/t5-small-lm-adapt", True), ("google/t5-base-lm-adapt", False),
}
SOFTMAX_METHOD = "superpos_softmax"


def table3(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame | None:
    """The formatted table, or None when the experiment has neither a softmax run nor a run on
    the original T5 (then Table 1 already says everything)."""
    superpos = runs[(runs["method"] == "superpos") & ~runs["dropout"]]
    if not (superpos["softmax"].any() or (superpos["model"] == "t5-base").any()):
        return None
    best = best_evaluations(superpos, history)
    if best.empty:
        return None
    # a method name per softmax setting, so that Table 1's cells and order apply unchanged
    best["method"] = best["method"].where(~best["softmax"], SOFTMAX_METHOD)
    values = table1_values(best)
    formatted = table1(values)
    keys = list(row_scores(values).index)
    softmax = [method == SOFTMAX_METHOD for _, method, _ in keys]
    formatted["Method"] = "SuperPos PT"
    formatted.insert(2, "Softmax", ["✓" if s else "✗" for s in softmax])
    formatted.insert(3, "Paper row", ["yes" if (model, s) in PAPER_ROWS else "extension" for (model, _, _), s in zip(keys, softmax)])
    return formatted.drop(columns="Dropout")

"""Known-answer test of Table 2 (methods.md section 6): the paper's own Table 1 in, its Table 2 out.

The 14 non-ATTEMPT rows of the paper's Table 1 (T5v1.1 Small and Base LM-Adapted), transcribed
from ../shared/papers/superpos-prompt.md; a two-metric cell's score is the mean of its two
numbers. Each row ends with the paper's Avg. column and its Table 2 mean and std.
"""

import numpy as np
import pandas as pd
import pytest

from analysis.table2 import standardized_scores, table2

TASKS = ["qqp", "qnli", "mnli", "sst2", "stsb", "mrpc", "cola", "multirc", "rte", "cb", "copa", "wic", "boolq"]

# model method dropout | QQP QNLI MNLI SST-2 STS-B MRPC CoLA MultiRC RTE CB COPA WiC BoolQ | Avg. T2-mean T2-std
PAPER = """
small simple   1 | 58.2/65.5 50.6 33.2 79.4 9.8/7.9   81.2/68.4 0.0  17.3/0.3  52.3 0.0/0.0   0.0  50.6 62.2 | 37.1 17.1 26.4
small simple   0 | 70.8/75.3 72.8 50.7 84.9 0.0/0.0   82.5/71.3 0.0  22.6/0.6  49.1 0.0/0.0   0.0  57.4 62.6 | 41.5 28.9 29.5
small residual 1 | 70.6/74.9 61.8 34.6 82.8 69.7/72.4 81.9/71.1 0.5  59.9/0.8  52.7 49.6/71.4 56.0 52.4 62.3 | 54.9 44.7 31.3
small residual 0 | 73.3/78.2 79.2 60.7 85.1 80.8/80.6 88.3/83.3 20.6 59.8/4.4  59.6 68.6/73.2 56.0 58.2 64.7 | 63.8 65.9 20.0
small superpos 1 | 74.4/79.9 82.9 66.7 88.8 82.9/82.8 88.4/82.6 23.4 59.9/0.8  58.5 39.6/60.7 56.0 58.6 62.4 | 63.3 66.9 17.8
small superpos 0 | 79.1/83.3 85.3 71.7 89.8 84.0/84.0 89.9/85.8 38.9 66.6/16.7 64.6 73.6/76.8 58.0 65.7 68.9 | 70.2 81.7 9.7
small full     1 | 87.4/90.5 89.5 82.9 92.1 85.8/85.5 89.6/84.8 42.0 68.5/19.3 66.1 47.9/69.6 57.0 66.5 71.1 | 71.7 85.2 9.0
base  simple   1 | 54.3/38.2 50.5 34.8 85.0 0.0/0.0   81.2/68.4 0.0  2.5/0.3   53.1 0.0/0.0   0.0  50.6 62.6 | 35.3 17.2 25.2
base  simple   0 | 0.0/0.0   76.9 0.0  92.2 0.0/0.0   82.0/70.6 24.8 55.6/2.1  53.4 0.0/0.0   59.0 57.7 0.0  | 36.1 30.8 32.6
base  residual 1 | 72.1/75.0 58.0 34.8 91.3 81.6/81.7 82.0/70.3 0.0  59.9/0.8  52.7 43.6/64.3 58.0 54.2 62.8 | 56.0 49.5 32.8
base  residual 0 | 76.1/81.4 83.3 70.7 92.7 86.2/86.1 87.4/82.8 44.7 63.9/11.3 70.0 82.6/80.4 60.0 64.3 65.3 | 70.8 83.2 10.2
base  superpos 1 | 79.0/83.1 79.2 76.5 94.0 86.2/86.6 89.1/83.6 45.4 68.7/18.2 57.4 44.8/66.1 58.0 58.3 62.3 | 68.0 75.9 18.5
base  superpos 0 | 81.9/86.3 89.8 81.0 94.2 88.6/88.5 89.7/85.5 56.5 72.9/24.9 70.4 78.3/82.1 62.0 67.6 74.0 | 75.8 93.6 4.7
base  full     1 | 88.3/91.1 92.7 88.1 94.8 90.1/89.8 91.9/88.2 53.0 76.2/35.3 72.9 53.5/76.8 57.0 69.3 78.9 | 76.7 97.4 5.7
"""

MODELS = {"small": "google/t5-small-lm-adapt", "base": "google/t5-base-lm-adapt"}


def paper_rows():
    index, scores, expected = [], [], []
    for line in PAPER.strip().splitlines():
        key, cells, tail = line.split("|")
        model, method, dropout = key.split()
        index.append((MODELS[model], method, dropout == "1"))
        scores.append([np.mean([float(x) for x in cell.split("/")]) for cell in cells.split()])
        expected.append([float(x) for x in tail.split()])
    frame = pd.DataFrame(scores, index=pd.MultiIndex.from_tuples(index, names=["model", "method", "dropout"]), columns=TASKS)
    return frame, pd.DataFrame(expected, index=frame.index, columns=["avg", "mean", "std"])


def test_paper_table1_reproduces_paper_table2():
    scores, expected = paper_rows()
    assert scores.shape == (14, 13)
    # the transcription is checked against the paper's own Avg. column
    np.testing.assert_allclose(scores.mean(axis=1), expected["avg"], atol=0.051)
    values, problems = standardized_scores(scores)
    assert problems == []
    assert (values["tasks"] == 13).all()
    np.testing.assert_allclose(values["mean"], expected["mean"], atol=0.1)
    np.testing.assert_allclose(values["std"], expected["std"], atol=0.1)
    small, base = MODELS["small"], MODELS["base"]
    assert values.loc[(small, "superpos", False), "mean"] == pytest.approx(81.7, abs=0.1)
    assert values.loc[(base, "superpos", False), "std"] == pytest.approx(4.7, abs=0.1)


def test_table2_excludes_attempt_and_formats_per_model():
    scores, _ = paper_rows()
    attempt = pd.DataFrame([[np.nan] * 4 + [0.0] * 9], columns=TASKS,
                           index=pd.MultiIndex.from_tuples([(MODELS["small"], "attempt", False)], names=scores.index.names))
    numbers, formatted, problems = table2(pd.concat([scores, attempt]))
    assert "attempt" not in numbers.index.get_level_values("method")
    assert problems == []
    assert list(formatted.columns) == ["Method", "Dropout", "T5v1.1 Small LM-Adapted", "T5v1.1 Base LM-Adapted"]
    assert list(formatted["Method"]) == ["Simple PT", "Simple PT", "Residual PT", "Residual PT", "SuperPos PT", "SuperPos PT", "Full FT"]
    # formatted "mean±std", one decimal; the paper's roundings agree within 0.1
    cells = {(r.Method, r.Dropout): r for r in formatted.itertuples(index=False)}
    for key, paper in {("SuperPos PT", "✗"): (81.7, 9.7, 93.6, 4.7), ("Full FT", "✓"): (85.2, 9.0, 97.4, 5.7)}.items():
        small, base = cells[key][2], cells[key][3]
        got = [float(x) for cell in (small, base) for x in cell.split("±")]
        np.testing.assert_allclose(got, paper, atol=0.1)

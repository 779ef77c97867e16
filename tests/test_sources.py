"""Data sources (original files, Parquet, hub), bad input, and the tokenisation cache."""

import json

import pytest

from glue_fixtures import TASK_NAMES, hub_records, splits_of, write_original_split, write_parquet
from superpos.cli import main
from superpos.config import TrainConfig
from superpos.data import encode_split
from superpos.errors import ConfigError, DataError
from superpos.tasks import get_task
from superpos.tasks.sources import load_examples


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory):
    return write_parquet(tmp_path_factory.mktemp("parquet"))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_source_gives_the_same_examples(name, fixture_data_dir, parquet_dir, monkeypatch):
    """Original files, hub-schema Parquet and the hub (``datasets.load_dataset``, faked) agree row for row."""
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(hub_records(task_name_of[(path, name)], split))

    task = get_task(name)
    task_name_of = {task.hub: name}
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    for split in splits_of(name):
        original = load_examples(task, split, fixture_data_dir)
        assert load_examples(task, split, parquet_dir) == original
        assert load_examples(task, split, source="hub") == original
    repo = "nyu-mll/glue" if name in ("qqp", "qnli", "mnli", "sst2", "stsb", "mrpc", "cola", "rte") else "aps/super_glue"
    config = "rte" if name == "superglue_rte" else name
    assert calls == [(repo, config, split) for split in splits_of(name)]


def test_real_tsv_reads_with_quoting_off_and_bom(data_dir):
    mrpc = load_examples(get_task("mrpc"), "validation", data_dir)
    assert len(mrpc) == 408  # the BOM does not hide the "Quality" column
    assert len(load_examples(get_task("sst2"), "train", data_dir)) == 67349


def test_cola_is_header_less(fixture_data_dir):
    examples = load_examples(get_task("cola"), "train", fixture_data_dir)
    assert len(examples) == 8  # the first line is a row, not a header
    assert examples[0].fields == {"sentence": 'sentence 0 of cola train "quoted'}


# -- bad input: a clear DataError naming file, line and field -----------------------------
def test_missing_column(tmp_path):
    path = tmp_path / "rte" / "train.tsv"
    path.parent.mkdir()
    path.write_text("index\tsentence1\tlabel\n0\ta\tentailment\n")
    with pytest.raises(DataError, match=r"train\.tsv, line 2: missing field 'sentence2'"):
        load_examples(get_task("rte"), "train", tmp_path)


def test_wrong_column_count(tmp_path):
    path = tmp_path / "sst2" / "train.tsv"
    path.parent.mkdir()
    path.write_text("sentence\tlabel\nfine\t1\nbroken\t1\textra\n")
    with pytest.raises(DataError, match=r"train\.tsv, line 3: 3 tab-separated fields, expected 2"):
        load_examples(get_task("sst2"), "train", tmp_path)


@pytest.mark.parametrize(
    "name, row, message",
    [
        ("cb", {"premise": "p", "hypothesis": "h", "label": "maybe", "idx": 0}, r"line 2: field 'label' has unknown label 'maybe'"),
        ("boolq", {"question": "q", "passage": "p", "label": 1, "idx": 0}, r"line 2: field 'label' has unknown label 1"),
        ("copa", {"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": 2, "idx": 0}, r"line 2: field 'label' has unknown label 2"),
        ("wic", {"word": "w", "sentence1": "a", "sentence2": "b", "label": True}, None),
    ],
)
def test_unknown_label(tmp_path, name, row, message):
    good = hub_records(name, "train", 1)
    path = write_original_split(tmp_path / name, name, "train", good)
    path.write_text(path.read_text() + json.dumps(row) + "\n")
    if message is None:  # a well-formed row
        assert len(load_examples(get_task(name), "train", tmp_path)) == 2
        return
    with pytest.raises(DataError, match=rf"{path.name}, {message}"):
        load_examples(get_task(name), "train", tmp_path)


def test_unknown_tsv_label_and_bad_score(tmp_path):
    write_original_split(tmp_path / "mrpc", "mrpc", "train", [{**hub_records("mrpc", "train", 1)[0], "label": 7}])
    with pytest.raises(DataError, match=r"line 2: field 'Quality' has unknown label '7'; allowed: '0', '1'"):
        load_examples(get_task("mrpc"), "train", tmp_path)
    write_original_split(tmp_path / "stsb", "stsb", "train", [{**hub_records("stsb", "train", 1)[0], "label": 7.5}])
    with pytest.raises(DataError, match=r"line 2: field 'score' = '7.500' is not a number in \[0, 5\]"):
        load_examples(get_task("stsb"), "train", tmp_path)


def test_empty_split(tmp_path):
    path = tmp_path / "rte" / "validation.tsv"
    path.parent.mkdir()
    path.write_text("index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(DataError, match=r"validation\.tsv: the validation split of task rte holds no examples"):
        load_examples(get_task("rte"), "validation", tmp_path)


def test_truncated_jsonl_line(tmp_path):
    path = write_original_split(tmp_path / "cb", "cb", "train", hub_records("cb", "train", 3))
    path.write_text(path.read_text()[:-20])  # the last line is cut mid-object
    with pytest.raises(DataError, match=r"train\.jsonl, line 3: not a complete JSON object"):
        load_examples(get_task("cb"), "train", tmp_path)


@pytest.mark.parametrize("name", ["rte", "cb"])  # a GLUE TSV, a SuperGLUE JSONL
def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path, name):
    path = write_original_split(tmp_path / name, name, "train", hub_records(name, "train", 3))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"train", b"tr\xe9in", 1)  # Latin-1 where UTF-8 is expected
    path.write_bytes(b"".join(lines))
    column = lines[2].index(b"\xe9") + 1
    with pytest.raises(DataError, match=rf"{path.name}, line 3: byte 0xe9 at column {column} is not UTF-8 .*save the file as UTF-8"):
        load_examples(get_task(name), "train", tmp_path)


def test_multirc_error_names_the_nested_field(tmp_path):
    path = tmp_path / "multirc" / "train.jsonl"
    path.parent.mkdir()
    answers = [{"text": "a", "idx": 0, "label": 1}, {"text": "b", "idx": 1}]
    line = {"idx": 0, "passage": {"text": "p", "questions": [{"question": "q", "answers": answers, "idx": 0}]}}
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(DataError, match=r"line 1, passage\.questions\[0\]\.answers\[1\]: missing label field 'label'"):
        load_examples(get_task("multirc"), "train", tmp_path)


def test_hub_row_without_gold_label():
    with pytest.raises(DataError, match=r"row 1: field 'label' has unknown label -1"):
        get_task("rte").example_from_hub_row({"sentence1": "a", "sentence2": "b", "label": -1}, "nyu-mll/glue (rte, test), row 1")


def test_missing_split_names_the_expected_file(tmp_path):
    with pytest.raises(DataError, match=r"no train split for task qqp: expected .*qqp/train\.tsv \(or train\.parquet\)"):
        load_examples(get_task("qqp"), "train", tmp_path)


def test_bad_data_fails_before_training(tmp_path, capsys):
    write_original_split(tmp_path / "data" / "cb", "cb", "train", hub_records("cb", "train"))
    (tmp_path / "data" / "cb" / "validation.jsonl").write_text('{"premise": "p", "hypothesis": "h", "label": "neutral"')
    out = tmp_path / "run"
    assert main(["train", "--task", "cb", "--model", "tiny-t5", "--data-dir", str(tmp_path / "data"), "--out", str(out), "--no-progress"]) == 2
    assert "validation.jsonl, line 1: not a complete JSON object" in capsys.readouterr().err
    assert not (out / "metrics.jsonl").exists()


def test_unknown_source_is_refused():
    with pytest.raises(ConfigError, match="unknown source 'web'.*allowed: local, hub"):
        TrainConfig(source="web").validate()


# -- tokenisation cache ----------------------------------------------------------------------
def test_tokenisation_cache(tiny_t5, data_dir, tokenized_cache):
    rte = get_task("rte")
    examples = load_examples(rte, "validation", data_dir)
    first = encode_split(tiny_t5, rte, examples, "t5", 128)
    files = list((tokenized_cache / "tokenized").glob("*.pt"))
    assert not first.from_cache and len(files) == 1 and not list(tokenized_cache.rglob("*.tmp"))
    second = encode_split(tiny_t5, rte, examples, "t5", 128)
    assert second.from_cache
    assert (second.input_ids, second.targets, second.golds, second.groups) == (first.input_ids, first.targets, first.golds, first.groups)
    # anything the result depends on is part of the key: template, length, content
    assert not encode_split(tiny_t5, rte, examples, "attempt", 128).from_cache
    assert not encode_split(tiny_t5, rte, examples, "t5", 64).from_cache
    assert not encode_split(tiny_t5, rte, examples[:-1], "t5", 128).from_cache
    assert len(list((tokenized_cache / "tokenized").glob("*.pt"))) == 4


def test_tokenisation_cache_keeps_float_targets(minilm, fixture_data_dir, tokenized_cache):
    stsb = get_task("stsb")
    examples = load_examples(stsb, "train", fixture_data_dir)
    first = encode_split(minilm, stsb, examples, "t5", 64)
    second = encode_split(minilm, stsb, examples, "t5", 64)
    assert second.from_cache and second.targets == first.targets
    assert all(isinstance(t[0], float) for t in second.targets)

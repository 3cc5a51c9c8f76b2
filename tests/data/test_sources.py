"""Local file formats, hub streaming (through `datasets` on local files), interleaving, fallback and bad input."""

from __future__ import annotations

import gzip
import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distil.data.corpus import Corpus, interleave
from distil.data.sources import HubDataset, LocalFiles, SourceUnavailable, resolve_sources

DOCUMENTS = ["first document.\nstill the first.", "second one", "third, with émojis ✓"]


def write_jsonl(path, records, compress=False):
    text = "".join(json.dumps(record) + "\n" for record in records)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as file:
            file.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_txt_documents_are_separated_by_blank_lines(tmp_path):
    text = "\n\nfirst document.\nstill the first.\n \n\n\nsecond one\n\nthird, with émojis ✓"
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    assert list(LocalFiles(str(tmp_path / "*.txt")).documents()) == DOCUMENTS


@pytest.mark.parametrize("unknown_token", ["[UNK]", "<unk>"])  # BERT's and RoBERTa's
def test_the_unknown_marker_becomes_the_tokenizers_unknown_token(tmp_path, unknown_token):
    (tmp_path / "a.txt").write_text("a <unk> lobster\n\n<unk> and <unk>\n\nno marker\n", encoding="utf-8")
    marked = LocalFiles(str(tmp_path / "*.txt"), unknown_marker="<unk>", name="marked")
    corpus = Corpus([marked], val_documents=1, seed=0, unknown_token=unknown_token)
    assert list(corpus.validation_documents()) == [f"a {unknown_token} lobster"]
    assert list(corpus.training_documents(0)) == [f"{unknown_token} and {unknown_token}", "no marker"]
    assert list(marked.documents())[0] == "a <unk> lobster"  # the source itself yields the text as written
    with pytest.raises(ValueError, match=r"source marked: unknown_marker='<unk>' needs a tokenizer with an unknown"):
        Corpus([marked], val_documents=1, seed=0, unknown_token=None)


def test_a_causal_lm_leaves_the_unknown_marker_out(tmp_path):
    """GPT-2's (and the shared causal teacher's) unk_token is its end-of-text: a marker replaced by it would end the
    document in its middle, and kept as text it would be a word of no text."""
    (tmp_path / "a.txt").write_text("a <unk> lobster\n\n<unk> and <unk>\n", encoding="utf-8")
    marked = LocalFiles(str(tmp_path / "*.txt"), unknown_marker="<unk>", name="marked")
    corpus = Corpus([marked], val_documents=1, seed=0, unknown_token="<|endoftext|>", drop_unknown_markers=True)
    assert list(corpus.validation_documents()) == ["a lobster"]
    assert list(corpus.training_documents(0)) == [" and"]


def test_jsonl_gzip_txt_and_parquet_give_the_same_documents(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": d, "id": i} for i, d in enumerate(DOCUMENTS)])
    write_jsonl(tmp_path / "b.jsonl.gz", [{"text": d} for d in DOCUMENTS], compress=True)
    with gzip.open(tmp_path / "c.txt.gz", "wt", encoding="utf-8") as file:
        file.write("\n\n".join(DOCUMENTS))
    pq.write_table(pa.table({"body": DOCUMENTS}), tmp_path / "d.parquet", row_group_size=2)
    assert list(LocalFiles([str(tmp_path / "a.jsonl")]).documents()) == DOCUMENTS
    assert list(LocalFiles(str(tmp_path / "b.jsonl.gz")).documents()) == DOCUMENTS
    assert list(LocalFiles(str(tmp_path / "c.txt.gz")).documents()) == DOCUMENTS
    assert list(LocalFiles(str(tmp_path / "d.parquet"), text_field="body").documents()) == DOCUMENTS


def test_a_missing_text_field_names_the_field_and_the_fields_present(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"content": "x"}])
    pq.write_table(pa.table({"content": ["x"]}), tmp_path / "b.parquet")
    with pytest.raises(KeyError, match=r"text_field='text'.*content"):
        list(LocalFiles(str(tmp_path / "a.jsonl")).documents())
    with pytest.raises(KeyError, match=r"text_field='text'.*content"):
        list(LocalFiles(str(tmp_path / "b.parquet")).documents())


@pytest.mark.parametrize(("value", "kind"), [(42, "int"), (["a", "b"], "list"), ({"t": "x"}, "dict"), (True, "bool")])
def test_a_record_whose_text_is_not_a_string_is_refused_with_file_and_line(tmp_path, value, kind):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "fine"}, {"text": value}])
    with pytest.raises(ValueError, match=f"a.jsonl:2: text_field='text' holds a {kind}, not a string"):
        list(LocalFiles(str(tmp_path / "a.jsonl")).documents())


def test_records_whose_text_is_null_are_skipped_counted_and_logged_in_jsonl_and_parquet(tmp_path, caplog):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "one"}, {"text": None}, {"text": "two"}, {"text": None}])
    pq.write_table(pa.table({"text": ["one", None, "two"]}), tmp_path / "b.parquet")
    with caplog.at_level(logging.WARNING):
        assert list(LocalFiles(str(tmp_path / "a.jsonl")).documents()) == ["one", "two"]
        assert list(LocalFiles(str(tmp_path / "b.parquet")).documents()) == ["one", "two"]
        assert list(HubDataset("json", data_files=str(tmp_path / "a.jsonl"), name="hub").documents()) == ["one", "two"]
    assert "source hub: skipped 2 records whose text_field='text' is null" in caplog.text
    assert f"{tmp_path / 'a.jsonl'}: skipped 2 records whose text_field='text' is null" in caplog.text
    assert f"{tmp_path / 'b.parquet'}: skipped 1 records whose text_field='text' is null" in caplog.text


@pytest.mark.parametrize("name", ["a.txt.gz", "a.jsonl.gz"])
def test_a_truncated_gzip_file_is_named(tmp_path, name):
    text = "".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(200))
    data = gzip.compress(text.encode("utf-8"))
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{tmp_path / name} is truncated or not a gzip file"):
        list(LocalFiles(str(tmp_path / name)).documents())


def test_undecodable_bytes_are_an_error_unless_replaced_and_counted(tmp_path, caplog):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n\nna\xefve".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt: bytes b'\\xe9' are not valid UTF-8.*decode_errors=replace"):
        list(LocalFiles(str(tmp_path / "latin1.txt")).documents())
    with caplog.at_level(logging.WARNING):
        documents = list(LocalFiles(str(tmp_path / "latin1.txt"), decode_errors="replace").documents())
    assert documents == ["caf\ufffd au lait", "na\ufffdve"]
    assert "replaced 2 undecodable bytes" in caplog.text


def test_empty_files_are_skipped_and_logged_but_an_all_empty_source_is_an_error(tmp_path, caplog):
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    (tmp_path / "full.txt").write_text("one\n\ntwo\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert list(LocalFiles(str(tmp_path / "*.txt")).documents()) == ["one", "two"]
    assert "skipped 1 empty file(s)" in caplog.text and "empty.txt" in caplog.text
    with pytest.raises(ValueError, match="hold no text"):
        list(LocalFiles(str(tmp_path / "empty.txt")).documents())


def test_missing_and_unsupported_files_are_errors_naming_them(tmp_path):
    (tmp_path / "notes.docx").write_text("x")
    with pytest.raises(FileNotFoundError, match="absent-"):
        list(LocalFiles(str(tmp_path / "absent-*.txt")).documents())
    with pytest.raises(ValueError, match=r"notes.docx has an unsupported type; allowed: .txt"):
        list(LocalFiles(str(tmp_path / "*.docx")).documents())
    with pytest.raises(ValueError, match="weight=0"):
        LocalFiles("x.txt", weight=0)


SQUAD = {
    "version": "1.1",
    "data": [
        {"title": "A", "paragraphs": [{"context": "First paragraph.", "qas": []}, {"context": "Second one."}]},
        {"title": "B", "paragraphs": [{"context": "Third, of article B.", "qas": [{"question": "q?"}]}]},
    ],
}
CONLL = """-DOCSTART- -X- -X- O

SOCCER NN I-NP O
- : O O
JAPAN NNP I-NP I-LOC
WIN NNP I-NP O
. . O O

Nadim NNP I-NP I-PER
Ladki NNP I-NP I-PER

-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
"""


def test_squad_paragraphs_and_conll_documents_are_read_when_the_format_is_named(tmp_path):
    (tmp_path / "dev.json").write_text(json.dumps(SQUAD), encoding="utf-8")
    (tmp_path / "eng.testb").write_text(CONLL, encoding="utf-8")
    squad = LocalFiles(str(tmp_path / "dev.json"), format="squad")
    assert list(squad.documents()) == ["First paragraph.", "Second one.", "Third, of article B."]
    conll = LocalFiles(str(tmp_path / "eng.testb"), format="conll")
    assert list(conll.documents()) == ["SOCCER - JAPAN WIN .\nNadim Ladki", "EU rejects"]
    with pytest.raises(ValueError, match=r"eng.testb has an unsupported type.*format \(one of \['text'"):
        LocalFiles(str(tmp_path / "eng.testb")).check()  # no telling extension: the format must be named
    with pytest.raises(ValueError, match=r"source dev format='squad2'; allowed: null \(by file name\) or one of"):
        LocalFiles(str(tmp_path / "dev.json"), format="squad2", name="dev")


def test_a_file_that_is_not_squad_json_is_an_error_naming_the_file_and_the_layout(tmp_path):
    (tmp_path / "flat.json").write_text(json.dumps({"paragraphs": []}), encoding="utf-8")
    (tmp_path / "no_context.json").write_text(json.dumps({"data": [{"paragraphs": [{"text": "x"}]}]}))
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match=r"flat.json has no top-level list 'data'; expected SQuAD's"):
        list(LocalFiles(str(tmp_path / "flat.json"), format="squad").documents())
    with pytest.raises(ValueError, match=r"no_context.json: data\[0\].paragraphs\[0\] has no text 'context'"):
        list(LocalFiles(str(tmp_path / "no_context.json"), format="squad").documents())
    with pytest.raises(ValueError, match=r"broken.json is not valid JSON"):
        list(LocalFiles(str(tmp_path / "broken.json"), format="squad").documents())


def test_hub_dataset_streams_records_and_joins_them_into_documents(tmp_path):
    path = write_jsonl(tmp_path / "sentences.jsonl", [{"text": f"sentence {i}."} for i in range(7)])
    source = HubDataset("json", data_files=str(path), records_per_document=3)
    assert list(source.documents()) == [
        "sentence 0.\nsentence 1.\nsentence 2.",
        "sentence 3.\nsentence 4.\nsentence 5.",
        "sentence 6.",
    ]
    with pytest.raises(KeyError, match="text_field='body'"):
        list(HubDataset("json", data_files=str(path), text_field="body").documents())


def test_unreachable_sources_fall_back_and_otherwise_name_what_to_set(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # no network wait: the hub counts as unreachable
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    path = write_jsonl(tmp_path / "backup.jsonl", [{"text": "backup"}])
    missing = [LocalFiles(str(tmp_path / "shared/*.txt"), name="wikipedia")]
    fallback = [HubDataset("json", data_files=str(path))]
    assert resolve_sources(missing, fallback, str(tmp_path / "shared")) is fallback
    unreachable = [HubDataset("no-such-org/no-such-dataset")]
    with pytest.raises(SourceUnavailable, match=r"data.sources: .*shared/\*.txt.*data.fallback_sources: .*no-such-org"):
        resolve_sources(missing, unreachable, str(tmp_path / "shared"))


def test_a_mistyped_path_is_an_error_when_the_shared_folder_exists_and_the_log_names_the_corpus(tmp_path, caplog):
    (tmp_path / "shared").mkdir()
    write_jsonl(tmp_path / "shared" / "wiki.jsonl", [{"text": "shared text"}])
    fallback = [HubDataset("json", data_files=str(tmp_path / "shared" / "wiki.jsonl"), name="hub corpus")]
    mistyped = [LocalFiles(str(tmp_path / "shared/wikipeda/*.txt"), name="wikipedia")]
    message = (
        rf"no file matches .*wikipeda.*only when {tmp_path / 'shared'} \(data.fallback_when_missing\) does not exist"
    )
    with pytest.raises(SourceUnavailable, match=message):
        resolve_sources(mistyped, fallback, str(tmp_path / "shared"))
    with pytest.raises(ValueError, match="data.fallback_sources are given without data.fallback_when_missing"):
        resolve_sources(mistyped, fallback, None)
    caplog.set_level(logging.INFO, logger="distil.data.sources")
    present = [LocalFiles(str(tmp_path / "shared/*.jsonl"), name="wikipedia")]
    assert resolve_sources(present, fallback, str(tmp_path / "shared")) is present
    assert f"corpus: data.sources: wikipedia ({tmp_path / 'shared/*.jsonl'})" in caplog.text
    assert resolve_sources(mistyped, fallback, str(tmp_path / "absent")) is fallback
    assert f"{tmp_path / 'absent'} does not exist: corpus: data.fallback_sources: hub corpus" in caplog.text


def test_interleaving_follows_the_weights_and_keeps_every_document_once():
    streams = [iter([f"a{i}" for i in range(300)]), iter([f"b{i}" for i in range(100)])]
    mixed = list(interleave(streams, [3.0, 1.0], np.random.default_rng(0)))
    assert sorted(mixed) == sorted([f"a{i}" for i in range(300)] + [f"b{i}" for i in range(100)])
    share_a = sum(d.startswith("a") for d in mixed[:200]) / 200
    assert 0.68 < share_a < 0.82
    assert [d for d in mixed if d.startswith("b")] == [f"b{i}" for i in range(100)]  # order within a source kept


def test_validation_takes_the_first_documents_of_every_source_and_training_the_rest(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n".join(f"a{i}" for i in range(10)), encoding="utf-8")
    (tmp_path / "b.txt").write_text("\n\n".join(f"b{i}" for i in range(10)), encoding="utf-8")
    corpus = Corpus([LocalFiles(str(tmp_path / "a.txt")), LocalFiles(str(tmp_path / "b.txt"))], val_documents=3, seed=0)
    assert sorted(corpus.validation_documents()) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    first_pass, second_pass = list(corpus.training_documents(0)), list(corpus.training_documents(1))
    expected = sorted([f"a{i}" for i in range(3, 10)] + [f"b{i}" for i in range(3, 10)])
    assert sorted(first_pass) == sorted(second_pass) == expected
    assert first_pass != second_pass  # a new interleaving every pass


def test_validation_sources_replace_the_held_out_documents_which_still_stay_out_of_training(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n".join(f"a{i}" for i in range(6)), encoding="utf-8")
    (tmp_path / "unseen.txt").write_text("\n\n".join(f"u{i}" for i in range(5)), encoding="utf-8")
    training, unseen = LocalFiles(str(tmp_path / "a.txt")), LocalFiles(str(tmp_path / "unseen.txt"))
    corpus = Corpus([training], val_documents=2, seed=0, validation_sources=[unseen])
    assert list(corpus.validation_documents()) == [f"u{i}" for i in range(5)]  # all of them, in order
    assert sorted(corpus.training_documents(0)) == [f"a{i}" for i in range(2, 6)]  # as without validation_sources


def test_prescan_reads_local_files_up_to_its_limit_and_names_a_bad_record(tmp_path, monkeypatch, caplog):
    from distil.data import sources

    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "fine"}, {"text": 42}])
    local = [LocalFiles(str(path), name="local")]
    with pytest.raises(ValueError, match=r"a.jsonl:2: text_field='text' holds a int"):
        sources.prescan_sources(local, "auto")
    sources.prescan_sources(local, False)
    monkeypatch.setattr(sources, "PRESCAN_AUTO_BYTES", path.stat().st_size - 1)
    with caplog.at_level(logging.INFO):
        sources.prescan_sources(local, "auto")  # above the limit: read as training reaches it
    assert "data.prescan=auto: not reading the corpus ahead" in caplog.text
    with pytest.raises(ValueError, match=r"a.jsonl:2"):
        sources.prescan_sources(local, True)
    with pytest.raises(ValueError, match="data.prescan='yes' is not allowed: use true, false or auto"):
        sources.prescan_sources(local, "yes")

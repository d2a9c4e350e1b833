"""data.py on tiny corpora written in tmp_path, plus real-corpus checks that skip when a corpus is absent."""
import json
import os

import pytest
import torch

import data

SHARED = os.environ.get("IVAE_DATA_DIR", "")


def write(path, text, mode="w"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")


def tiny_ptb(root, train="a b c\nb c\na a b c d\nc\n", valid="a b\nz a\n", test="d c b a\n"):
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        write(root / "ptb" / f"ptb.{split}.txt", text)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("IVAE_DATA_DIR", raising=False)


# ----------------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------------


def test_vocab_specials_roundtrip_and_cut():
    v = data.Vocab.build([["b", "a", "b"], ["c", "b", "a"]], max_size=2)
    assert v.itos[:4] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert (data.PAD_ID, data.BOS_ID, data.EOS_ID, data.UNK_ID) == (0, 1, 2, 3)
    assert v.itos[4:] == ["b", "a"] and "c" not in v            # the 2 most frequent words
    ids = v.encode(["a", "b", "c"])
    assert ids == [1, v.stoi["a"], v.stoi["b"], 3, 2]
    assert v.decode(ids) == ["a", "b", "<unk>"]
    assert v.decode(v.encode(["b", "a"])) == ["b", "a"]           # round trip of in-vocabulary words
    assert v.decode([1, 4, 2, 5, 5]) == ["b"]                    # stops at </s>
    assert v.encode(["a"], add_markers=False) == [v.stoi["a"]]


def test_vocab_survives_a_checkpoint(tmp_path):
    v = data.Vocab.build([["x", "y", "y", "ü"]])
    torch.save({"vocab": v.state_dict(), "model": {}}, tmp_path / "ckpt.pt")
    back = data.Vocab.from_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["vocab"])
    assert back.itos == v.itos and back.stoi == v.stoi
    with pytest.raises(data.DataError):
        data.Vocab.from_state_dict({"itos": ["x", "y"]})


# ----------------------------------------------------------------------------------------------------
# Finding corpora, and the messages when they are missing
# ----------------------------------------------------------------------------------------------------


def test_load_named_corpus_from_data_dir(tmp_path, no_env):
    tiny_ptb(tmp_path)
    c = data.load_corpus("ptb", str(tmp_path))
    assert c.vocab.itos[4:] == ["c", "a", "b", "d"]   # by training frequency (ties: first seen), all words
    assert [c.vocab.decode(e) for e in c.examples["valid"]] == [["a", "b"], ["<unk>", "a"]]
    assert c.examples["test"][0] == [1] + [c.vocab.stoi[w] for w in "d c b a".split()] + [2]
    assert c.paths["train"] == [str(tmp_path / "ptb" / "ptb.train.txt")]


def test_data_dir_first_then_env(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    tiny_ptb(second, train="e f\n")
    monkeypatch.setenv("IVAE_DATA_DIR", str(second))
    assert data.load_corpus("ptb", str(first)).vocab.itos[4:] == ["e", "f"]      # found through the env
    tiny_ptb(first, train="g h\n")
    assert data.load_corpus("ptb", str(first)).vocab.itos[4:] == ["g", "h"]      # --data_dir wins


def test_missing_corpus_message_names_files_places_and_source(tmp_path, no_env):
    with pytest.raises(data.DataError) as err:
        data.load_corpus("ptb", str(tmp_path / "nowhere"))
    msg = str(err.value)
    for needed in ("ptb/ptb.train.txt", "ptb/ptb.valid.txt", "ptb/ptb.test.txt", "nowhere", "simple-examples"):
        assert needed in msg


def test_missing_training_split_is_never_replaced(tmp_path, monkeypatch):
    # The situation of the copies here: Yahoo without train.txt.
    write(tmp_path / "yahoo" / "val.txt", "a b\n")
    write(tmp_path / "yahoo" / "test.txt", "a b\n")
    monkeypatch.setenv("IVAE_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataError) as err:
        data.load_corpus("yahoo", str(tmp_path / "empty"))
    msg = str(err.value)
    assert "missing yahoo/train.txt" in msg and "present yahoo/val.txt" in msg
    assert "Implicit-LVM" in msg and "No other split" in msg
    # Asking for test alone still needs the training split for the vocabulary ...
    with pytest.raises(data.DataError):
        data.load_corpus("yahoo", str(tmp_path / "empty"), splits=("test",))
    # ... unless the vocabulary comes from a checkpoint.
    v = data.Vocab(["a"])
    c = data.load_corpus("yahoo", str(tmp_path / "empty"), splits=("test",), vocab=v)
    assert list(c.examples) == ["test"]
    # The moment a user adds the file, the corpus works.
    write(tmp_path / "yahoo" / "train.txt", "a b _UNK\n")
    c = data.load_corpus("yahoo", str(tmp_path / "empty"))
    assert c.vocab.decode(c.examples["train"][0]) == ["a", "b", "<unk>"]    # _UNK is read as <unk>
    assert "_UNK" not in c.vocab


def test_unknown_name_and_empty_split(tmp_path, no_env):
    with pytest.raises(data.DataError, match="unknown corpus 'ptbb'"):
        data.load_corpus("ptbb", str(tmp_path))
    tiny_ptb(tmp_path, test="\n\n")
    with pytest.raises(data.DataError, match="split 'test'.*no usable line"):
        data.load_corpus("ptb", str(tmp_path))


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys, no_env, table1):
    with pytest.raises(SystemExit) as exit_:
        table1.main(["--data", "ptb", "--data_dir", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "ptb/ptb.train.txt" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        table1.main(["--data", "ptb", "--splits", "train,dev"])
    assert "--splits" in capsys.readouterr().err


def test_own_corpus_folder(tmp_path, capsys, table1):
    folder = tmp_path / "mine"
    for split in ("train", "valid", "test"):
        write(folder / f"{split}.txt", "hello world\nhello again\n")
    c = data.load_corpus(str(folder), "unused")
    assert c.spec.kind == "lm" and len(c.examples["train"]) == 2 and "hello" in c.vocab
    assert table1.main(["--data", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "vocabulary: 7 entries" in out
    os.remove(folder / "valid.txt")
    with pytest.raises(data.DataError, match="valid.txt"):
        data.load_corpus(str(folder), "unused")


# ----------------------------------------------------------------------------------------------------
# Bad lines: skipped or mended, counted, reported once
# ----------------------------------------------------------------------------------------------------


def test_bad_lines_are_counted_and_reported_once(tmp_path, capsys, no_env):
    long_line = " ".join(["w"] * 201)                           # PTB drops sentences over 200 words
    train = b"a b\r\n\r\n\xff\xfe bad bytes\nc d\n   \n" + long_line.encode() + b"\nlast line no newline"
    tiny_ptb(tmp_path)
    write(tmp_path / "ptb" / "ptb.train.txt", train, mode="wb")
    c = data.load_corpus("ptb", str(tmp_path))
    rep = c.reports["train"]
    assert rep == {"crlf": 2, "empty": 2, "not_utf8": 1, "too_long_dropped": 1}
    assert [c.vocab.decode(e) for e in c.examples["train"]] == [["a", "b"], ["c", "d"], ["last", "line", "no", "newline"]]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("data: ptb/train:") and "non-UTF-8" in err[0]


def test_label_text_format_yelp(tmp_path, no_env):
    for split in ("train", "valid", "test"):
        write(tmp_path / "yelp" / f"yelp.{split}.txt", "4\tgreat food _UNK\n1\tbad\nno tab here\n")
    c = data.load_corpus("yelp", str(tmp_path))
    assert [c.vocab.decode(e) for e in c.examples["test"]] == [["great", "food", "<unk>"], ["bad"]]
    assert c.reports["train"]["malformed"] == 1


# ----------------------------------------------------------------------------------------------------
# Style and dialog examples
# ----------------------------------------------------------------------------------------------------


def test_style_examples_labels_and_length_filter(tmp_path, no_env):
    too_long = " ".join(["x"] * 26)                              # yelp_style keeps <= 25 words
    for split in ("train", "dev", "test"):
        write(tmp_path / "yelp_style" / f"sentiment.{split}.0", f"bad food\n{too_long}\n")
        write(tmp_path / "yelp_style" / f"sentiment.{split}.1", "good food\ngreat\n")
    c = data.load_corpus("yelp_style", str(tmp_path))
    ex = c.examples["valid"]
    assert [(c.vocab.decode(e.ids), e.label) for e in ex] == [(["bad", "food"], 0), (["good", "food"], 1),
                                                             (["great"], 1)]
    assert c.reports["valid"]["too_long_dropped"] == 1
    batch = data.collate(ex)
    assert batch.labels.tolist() == [0, 1, 1] and batch.tokens.shape == (3, 4)


def dailydialog(root, n_turns=12):
    line = " __eou__ ".join(f"Turn {i} , said {'A' if i % 2 == 0 else 'B'}." for i in range(n_turns)) + " __eou__\n"
    for split, folder in (("train", "train"), ("validation", "validation"), ("test", "test")):
        write(root / "dailydialog" / folder / f"dialogues_{split}.txt", line + "Hi ! __eou__ Hello . __eou__\n")


def test_dialog_context_window_hand_example(tmp_path, no_env):
    dailydialog(tmp_path)
    c = data.load_corpus("dailydialog", str(tmp_path))
    ex = c.examples["test"]
    assert len(ex) == 12 + 2                                     # every utterance is a response
    dec = c.vocab.decode
    # Tokenisation: lower-cased, nltk WordPunct ("A." -> "a", ".").
    assert dec(ex[0].response) == ["turn", "0", ",", "said", "a", "."]
    # First response: context is the start-of-dialog utterance alone, flagged 0.
    assert [dec(u) for u in ex[0].context] == [["<d>"]] and ex[0].speakers == [0]
    # Response 3 (said by B): context <d>, u0 (A), u1 (B), u2 (A) -> flags 0, 0, 1, 0.
    assert [dec(u)[:2] for u in ex[3].context] == [["<d>"], ["turn", "0"], ["turn", "1"], ["turn", "2"]]
    assert ex[3].speakers == [0, 0, 1, 0]
    # Last response (u11): the 10 previous utterances u1..u10; <d> and u0 have left the window.
    last = ex[11]
    assert len(last.context) == 10
    assert [dec(u)[1] for u in last.context] == [str(i) for i in range(1, 11)]
    assert last.speakers == [1, 0] * 5
    # A new dialog starts afresh.
    assert [dec(u) for u in ex[12].context] == [["<d>"]] and dec(ex[13].context[1]) == ["hi", "!"]
    # Batched: (B, C, U) contexts with their lengths.
    b = data.collate(ex[:4])
    assert b.context.shape[:2] == (4, 4) and b.context_lengths.tolist() == [1, 2, 3, 4]
    assert b.utt_lengths[0].tolist() == [3, 0, 0, 0] and b.speakers[3].tolist() == [0, 0, 1, 0]
    assert c.vocab.itos[4] == "<d>"


def test_dialog_utterances_are_cut_at_40_tokens(tmp_path, no_env):
    dailydialog(tmp_path)
    long = " ".join(f"w{i}" for i in range(60))
    write(tmp_path / "dailydialog" / "test" / "dialogues_test.txt", f"{long} __eou__ ok __eou__\n")
    c = data.load_corpus("dailydialog", str(tmp_path))
    first = c.examples["test"][0].response
    assert len(first) == 40 and first[0] == data.BOS_ID and first[-1] == data.EOS_ID
    assert c.reports["test"]["too_long_cut"] == 1


def test_switchboard_schema(tmp_path, no_env):
    conv = {"A": {}, "B": {}, "topic": "\"MUSIC\"", "prompt": "",
            "utts": [["A", "do you like music", ["q", [0, 1, 0, 0]]], ["B", "yeah i do", ["a", [0, 1, 0, 0]]],
                     ["B", "a lot", ["s", [0, 1, 0, 0]]], ["A", "uh-huh", ["b", [0, 1, 0, 0]]]]}
    for split in ("train", "valid", "test"):
        write(tmp_path / "switchboard" / "json_data" / f"{split}.jsonl", json.dumps(conv) + "\n{not json\n")
    c = data.load_corpus("switchboard", str(tmp_path))
    ex = c.examples["test"]
    assert len(ex) == 4 and c.reports["test"]["malformed"] == 1
    assert c.vocab.decode(ex[3].response) == ["uh", "-", "huh"]
    assert ex[3].speakers == [0, 1, 0, 0]                        # <d>, A (same as responder), B, B


# ----------------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------------


def lm_examples(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 12, (n,), generator=g).tolist()
    return [[data.BOS_ID] + [5 + i] * (L - 2) + [data.EOS_ID] for i, L in enumerate(lengths)]


def test_equal_length_batches_cover_every_example_once_without_padding():
    ex = lm_examples()
    batcher = data.Batcher(ex, batch_size=32, seed=7)
    seen = []
    batches = list(batcher.epoch(0))
    assert len(batches) == len(batcher)
    for b in batches:
        assert b.tokens.shape[0] <= 32 and b.tokens.dtype == torch.long
        assert torch.all(b.lengths == b.tokens.shape[1]) and bool((b.tokens != data.PAD_ID).all())  # no <pad>
        seen += [int(row[1]) - 5 for row in b.tokens]
    assert sorted(seen) == list(range(len(ex)))


def test_shuffling_is_seeded_per_epoch_and_resumable():
    ex = lm_examples()
    b = data.Batcher(ex, batch_size=16, seed=3)
    first = [x.tokens.tolist() for x in b.epoch(0)]
    assert first == [x.tokens.tolist() for x in data.Batcher(ex, batch_size=16, seed=3).epoch(0)]
    assert first != [x.tokens.tolist() for x in b.epoch(1)]                          # reshuffled
    assert first != [x.tokens.tolist() for x in data.Batcher(ex, batch_size=16, seed=4).epoch(0)]
    assert [x.tokens.tolist() for x in b.epoch(0, start=5)] == first[5:]             # resume mid-epoch
    ordered = data.Batcher(ex, batch_size=16, shuffle=False)
    lengths = [x.tokens.shape[1] for x in ordered.epoch(0)]
    assert lengths == sorted(lengths)


def test_length_buckets_pad_and_mask():
    ex = lm_examples(100)
    batches = list(data.Batcher(ex, batch_size=32, seed=0, equal_length=False).epoch(0))
    assert len(batches) == 4 and sum(b.tokens.shape[0] for b in batches) == 100
    for b in batches:
        real = torch.arange(b.tokens.shape[1]) < b.lengths[:, None]          # (B, T) the first `lengths` tokens
        assert torch.equal(b.tokens != data.PAD_ID, real)                   # <pad> exactly after them
        assert int(b.lengths.max()) == b.tokens.shape[1]
    with pytest.raises(ValueError):
        data.batch_plan([3, 4], batch_size=0, seed=0, epoch=0)


def test_batches_by_length_false_mix_lengths_and_cover_every_example_once():
    """by_length=False (dialog.py's --batching mixed): random batches, lengths mixed, seeded per epoch."""
    ex = lm_examples(100)
    b = data.Batcher(ex, batch_size=32, seed=0, equal_length=False, by_length=False)
    batches = list(b.epoch(0))
    seen = sorted(int(row[1]) - 5 for x in batches for row in x.tokens)
    assert seen == list(range(100)) and len(batches) == len(b) == 4
    assert any(len(set(x.lengths.tolist())) > 5 for x in batches)        # not grouped by length
    sorted_batches = data.Batcher(ex, batch_size=32, seed=0, equal_length=False).epoch(0)
    spread = lambda bs: sum(int(x.lengths.max() - x.lengths.min()) for x in bs)     # 4 batches each
    assert spread(batches) > 2 * spread(sorted_batches)
    assert [x.tokens.tolist() for x in b.epoch(1)] != [x.tokens.tolist() for x in batches]
    assert [x.tokens.tolist() for x in b.epoch(0, start=2)] == [x.tokens.tolist() for x in batches[2:]]


# ----------------------------------------------------------------------------------------------------
# Real corpora (skip cleanly when absent)
# ----------------------------------------------------------------------------------------------------


REPO_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")   # PTB ships there


def real_root(*rel):
    for root in (REPO_DATA, SHARED):
        if root and all(os.path.isfile(os.path.join(root, r)) for r in rel):
            return root
    pytest.skip(f"corpus files {rel} not found in data/ or $IVAE_DATA_DIR")


def test_ptb_ships_with_the_repository_byte_for_byte():
    """data/ptb/ holds Mikolov's PTB (data/ptb/README.md): present without $IVAE_DATA_DIR, the SHA-256 of
    each file as its README lists it, and tracked by git (not ignored like the other corpora)."""
    import hashlib
    import re
    import subprocess
    folder = os.path.join(REPO_DATA, "ptb")
    listed = dict(re.findall(r"`(ptb\.\w+\.txt)` \|[^|]*\|[^|]*\| `([0-9a-f]{64})`",
                             open(os.path.join(folder, "README.md"), encoding="utf-8").read()))
    assert sorted(listed) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]
    for name, sha in listed.items():
        with open(os.path.join(folder, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == sha, name
    ignored = subprocess.run(["git", "check-ignore", "-q", os.path.join(folder, "ptb.train.txt")],
                             cwd=os.path.dirname(REPO_DATA))
    assert ignored.returncode in (1, 128)            # 1: not ignored (0 would be); 128: a copy outside git


def test_ptb_table1_statistics(capsys, table1):
    root = real_root("ptb/ptb.train.txt", "ptb/ptb.valid.txt", "ptb/ptb.test.txt")
    assert table1.main(["--data", "ptb", "--data_dir", root]) == 0
    out = capsys.readouterr().out
    c = data.load_corpus("ptb", root)
    s = table1.corpus_stats(c)
    assert [s[k]["sentences"] for k in ("train", "valid", "test")] == [42068, 3370, 3761]
    assert s["vocab_size"] == 10002 and s["train"]["max_len"] == 82
    assert s["train"]["avg_len"] == pytest.approx(21.10, abs=0.01)
    assert "42,068" in out and "3,761" in out
    assert sum(len(b.lengths) for b in data.Batcher(c.examples["train"], 32).epoch(0)) == 42068


def test_dailydialog_real_counts():
    root = real_root("dailydialog/train/dialogues_train.txt", "dailydialog/validation/dialogues_validation.txt",
                     "dailydialog/test/dialogues_test.txt")
    c = data.load_corpus("dailydialog", root, verbose=False)
    assert [c.raw_counts[s] for s in ("train", "valid", "test")] == [11118, 1000, 1000]
    assert [len(c.examples[s]) for s in ("train", "valid", "test")] == [87171, 8069, 7740]
    assert len(c.vocab) == 10000 + 5
    assert max(len(e.context) for e in c.examples["test"]) == 10


def test_stats_without_training_split(tmp_path, capsys, no_env, table1):
    write(tmp_path / "yahoo" / "val.txt", "a b c\n")
    write(tmp_path / "yahoo" / "test.txt", "a b\nc d e f\n")
    assert table1.main(["--data", "yahoo", "--data_dir", str(tmp_path), "--splits", "valid,test"]) == 0
    out = capsys.readouterr().out
    assert "vocabulary: not built" in out and "\ntrain " not in out
    assert "test              2     2     4    3.00" in out


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    import random as pyrandom

    import numpy as np
    data.set_seed(3)
    data.save_checkpoint({"rng": data.rng_state()}, str(tmp_path / "c.pt"))
    first = (pyrandom.random(), np.random.rand(), torch.rand(2).tolist())
    data.set_rng_state(data.load_checkpoint(str(tmp_path / "c.pt"), "cpu")["rng"])
    assert (pyrandom.random(), np.random.rand(), torch.rand(2).tolist()) == first
    assert not (tmp_path / "c.pt.tmp").exists()                          # written through a temporary file


def test_eta_counts_the_validations_left_and_the_final_test():
    # 100 steps of 0.6 s = 1 min of training; validations at steps 20, 40, 50, 60, 80, 100 (epoch ends
    # at 50 and 100, every 20 steps; 100 counted once), 1 min each, and a test worth 3 validations.
    line = data.eta_minutes(0, 100, 0.6, 50, 20, 60.0, 3.0)
    assert line.startswith("ETA  10.0 min") and "1.0 train, 9.0 validation + test" in line
    assert data.eta_minutes(60, 100, 0.6, 50, 0, 60.0, 3.0).startswith("ETA   4.4 min")   # 0.4 + (1 + 3)
    assert data.eta_minutes(0, 100, 0.6, 50, 0, None, 3.0) == "ETA   1.0 min + evaluations"   # none timed yet


def test_precision_resolves_auto_by_hardware():
    cpu = torch.device("cpu")
    assert data.precision_in_use(cpu, "fp32") == "fp32" and data.precision_in_use(cpu, "bf16") == "bf16"
    assert data.precision_in_use(cpu, "auto") == ("bf16" if data.bf16_native(cpu) else "fp32")
    with data.autocast_for(cpu, "bf16")():
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16
    with data.autocast_for(cpu, "fp32")():
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.float32


def test_threads_flag_sets_torch_threads_and_rejects_negatives():
    import argparse
    parser = argparse.ArgumentParser()
    before = torch.get_num_threads()
    try:
        data.pick_device(False, True, parser, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        data.pick_device(False, True, parser, threads=-1)


def test_eval_progress_counts_tokens_and_is_silent_without_label(capsys):
    examples = [[1, 5, 2], [1, 5, 6, 7, 8, 2], [1, 6, 2]]               # 3 + 6 + 3 = 12 tokens
    prog = data.EvalProgress(examples, "test", every_s=0.0)
    prog.add(torch.tensor([3, 3]))
    prog.add(torch.tensor([6]))                                          # the end: no line, the result follows
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("test:  50% (2 of 3 sentences)") and "ETA" in lines[0]
    quiet = data.EvalProgress(examples, "", every_s=0.0)
    quiet.add(torch.tensor([3]))
    assert capsys.readouterr().out == ""


def test_resume_keeps_the_runs_own_run_settings(tmp_path):
    """--resume without --fwd_rev_ppl / --epochs continues with the run's own values; a flag given again
    wins; where the process runs (--threads) is the command line's."""
    import dataclasses
    import vae
    out = str(tmp_path / "run")
    parser = data.config_parser(vae.Config, "t")
    cfg = vae.Config(**vars(data.parse_args(parser, ["--out_dir", out, "--fwd_rev_ppl", "--epochs", "3",
                                                     "--threads", "1"])))
    os.makedirs(out)
    data.save_checkpoint({"script": "vae", "config": dataclasses.asdict(cfg), "step": 5, "model": {}},
                         os.path.join(out, "checkpoint.pt"))
    parser = data.config_parser(vae.Config, "t")
    again = vae.Config(**vars(data.parse_args(parser, ["--out_dir", out, "--resume", "--epochs", "5"])))
    data.Run(again, parser)                                  # loads the checkpoint, copies its settings
    assert again.fwd_rev_ppl is True and again.epochs == 5 and again.threads == 0

"""Nothing lost, no traceback (issue 14): a repeated command, a bad checkpoint, a bad --out_dir, a Ctrl-C
during validation, and the smaller holes (log columns, total training time, BOM, dialog bytes, messages).
Each test names the guard it checks; tiny corpora in tmp_path, the model sizes of the scripts' own tests."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import bench
import data
import dialog
import ivae
import ivae_mi
import style_transfer
import toy
import vae

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAE_TINY = ["--emb_dim", "16", "--hidden", "16", "--latent", "4", "--batch_size", "8", "--eval_samples", "8",
            "--iw_samples", "8", "--val_iw_samples", "4", "--log_every", "5", "--cpu", "--num_samples", "3",
            "--max_decode_len", "12"]
IVAE_TINY = ["--emb_dim", "16", "--hidden", "16", "--latent", "4", "--noise_dim", "4", "--encoder_width", "16",
             "--nu_width", "16", "--nu_layers", "2", "--batch_size", "8", "--eval_samples", "8", "--iw_samples", "8",
             "--fit_samples", "16", "--val_samples", "4", "--cpu", "--threads", "1", "--num_samples", "3",
             "--max_decode_len", "12"]
# Every script with a run folder, called the way a user would call it (corpus flags only: each case below
# stops before a corpus is read).
SCRIPTS = {"vae": vae.main, "ivae": ivae.main, "ivae_mi": ivae_mi.main, "style_transfer": style_transfer.main,
           "dialog": dialog.main}


def run_vae(corpus_dir, out_dir, *extra):
    return vae.main(["--data", corpus_dir, "--out_dir", str(out_dir), *VAE_TINY, *extra])


def parser_error(capsys, main, argv) -> str:
    """main(argv) must stop with a parser error (exit status 2): its message."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# 1. A repeated command never destroys a run (data.Run._open: "already holds a run")
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS)
def test_a_fresh_run_refuses_a_folder_that_holds_a_run(script, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"the previous run's weights")
    (out / "log.csv").write_text("step,split\n219,valid\n")
    err = parser_error(capsys, SCRIPTS[script], ["--out_dir", str(out), "--cpu"])
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (out / "checkpoint.pt").read_bytes() == b"the previous run's weights"            # intact
    assert (out / "log.csv").read_text() == "step,split\n219,valid\n"


def test_overwrite_starts_over_and_a_real_run_is_kept_otherwise(corpus_dir, tmp_path, capsys):
    out = tmp_path / "run"
    run_vae(corpus_dir, out, "--max_steps", "3")
    before = {n: (out / n).read_bytes() for n in ("checkpoint.pt", "log.csv", "metrics.json")}
    err = parser_error(capsys, vae.main, ["--data", corpus_dir, "--out_dir", str(out), *VAE_TINY, "--max_steps", "3"])
    assert "already holds a run (checkpoint.pt, log.csv)" in err
    assert {n: (out / n).read_bytes() for n in before} == before
    assert "excludes --resume" in parser_error(capsys, vae.main, ["--out_dir", str(out), "--resume", "--overwrite"])
    result = run_vae(corpus_dir, out, "--max_steps", "2", "--overwrite")
    assert result["step"] == 2 and "deleted the previous run" in capsys.readouterr().out
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2


# ----------------------------------------------------------------------------------------------------
# 2. Bad checkpoints: a message naming the file, and the previous good checkpoint (data.Run._open)
# ----------------------------------------------------------------------------------------------------

def test_a_truncated_checkpoint_falls_back_to_the_previous_one(corpus_dir, tmp_path, capsys):
    out = tmp_path / "run"
    run_vae(corpus_dir, out, "--max_steps", "6", "--save_every", "3")
    assert torch.load(out / "checkpoint.prev.pt", weights_only=True)["step"] == 3           # kept by the save
    good = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(good[:len(good) // 2])                            # a copy cut short
    with pytest.raises(data.CheckpointError) as err:                                       # not a DataError
        data.load_checkpoint(str(out / "checkpoint.pt"), "cpu")
    assert not isinstance(err.value, data.DataError) and "checkpoint.pt" in str(err.value)
    result = run_vae(corpus_dir, out, "--max_steps", "6", "--resume")
    messages = capsys.readouterr().err
    assert f"{out / 'checkpoint.pt'}: unreadable, truncated" in messages
    assert f"using {out / 'checkpoint.prev.pt'} instead (step 3)" in messages
    assert result["step"] == 6


def test_empty_checkpoints_are_a_message_naming_each_file(corpus_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (out / name).write_bytes(b"")
    err = parser_error(capsys, vae.main, ["--data", corpus_dir, "--out_dir", str(out), "--resume", "--cpu"])
    assert "no usable checkpoint" in err and "Traceback" not in err
    assert f"{out / 'checkpoint.pt'}: the file is empty" in err
    assert f"{out / 'checkpoint.prev.pt'}: the file is empty" in err


def test_a_foreign_checkpoint_names_the_script_that_wrote_it(corpus_dir, tmp_path, capsys):
    out = tmp_path / "run"
    run_vae(corpus_dir, out, "--max_steps", "2")
    err = parser_error(capsys, ivae_mi.main, ["--data", corpus_dir, "--out_dir", str(out), "--resume", "--cpu"])
    assert f"{out / 'checkpoint.pt'}: written by vae.py, not by ivae_mi.py" in err


def test_a_checkpoint_of_an_earlier_version_loads_unless_it_carries_retired_settings(corpus_dir, tmp_path, capsys):
    # Checkpoints written before the script's name was stored load when their settings are this version's;
    # one that still has --bf16 and the critic refit (retired) is refused with a message, not a traceback.
    out = tmp_path / "ivae"
    ivae.main(["--data", corpus_dir, "--out_dir", str(out), *IVAE_TINY, "--max_steps", "3"])

    def rewrite(**retired):
        for name in ("checkpoint.pt", "best.pt", "checkpoint.prev.pt", "best.prev.pt"):
            if (out / name).exists():
                ckpt = torch.load(out / name, weights_only=True)
                ckpt.pop("script", None)
                ckpt["config"].update(retired)
                torch.save(ckpt, out / name)
    rewrite()
    result = ivae.main(["--data", corpus_dir, "--out_dir", str(out), "--eval_only", "--cpu"])
    assert result["step"] == 3
    rewrite(bf16=False, refit_steps=3000)
    err = parser_error(capsys, ivae.main, ["--data", corpus_dir, "--out_dir", str(out), "--eval_only", "--cpu"])
    assert "an older version of this one (config fields bf16, refit_steps)" in err


def test_a_checkpoint_that_does_not_load_back_is_never_renamed_into_place(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    data.save_checkpoint({"step": 1}, path)
    monkeypatch.setattr(torch, "save", lambda obj, f: open(f, "wb").write(b"half a zip"))   # a disk gone bad
    with pytest.raises(data.CheckpointError, match="checkpoint.pt.tmp"):
        data.save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}


# ----------------------------------------------------------------------------------------------------
# 3. --out_dir problems are one message before any work (data.Run._open)
# ----------------------------------------------------------------------------------------------------

def test_out_dir_that_is_a_file_or_below_a_file(corpus_dir, tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    err = parser_error(capsys, vae.main, ["--data", corpus_dir, "--out_dir", str(a_file), "--cpu"])
    assert "is a file, not a folder" in err
    err = parser_error(capsys, ivae.main, ["--data", corpus_dir, "--out_dir", str(a_file / "run"), "--cpu"])
    assert f"lies below {a_file}, which is a file" in err


@pytest.mark.parametrize("main", [toy.main, bench.main], ids=["toy", "bench"])
def test_toy_and_bench_check_their_out_dir_too(main, corpus_dir, tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    argv = ["--out_dir", str(a_file), "--cpu"] + (["--data", corpus_dir] if main is bench.main else [])
    assert "is a file, not a folder" in parser_error(capsys, main, argv)


def test_out_dir_that_cannot_be_written(corpus_dir, tmp_path, capsys):
    if os.getuid() != 0:                                 # a read-only folder (root writes there anyway)
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
    else:                                                # for root: a folder of sysfs, where nobody writes
        folder = "/sys/kernel"
        try:
            with open(os.path.join(folder, ".probe"), "w"):
                pass
            os.remove(os.path.join(folder, ".probe"))
            pytest.skip("no read-only folder to try")
        except OSError:
            pass
    err = parser_error(capsys, vae.main, ["--data", corpus_dir, "--out_dir", str(folder), "--cpu"])
    assert "cannot be written to" in err


# ----------------------------------------------------------------------------------------------------
# 4. Ctrl-C during validation: a prompt stop with the epoch's checkpoint saved; --resume redoes the
#    validation and ends equal to an uninterrupted run (Run._on_ctrl_c, Run._validate; save before)
# ----------------------------------------------------------------------------------------------------

# About 4 s of validation per epoch on one thread (60,000 importance samples of 24 sentences); 14 steps
# an epoch on the tiny corpus.
SLOW_VALID = ["--epochs", "2", "--val_iw_samples", "60000", "--log_every", "14"]


def start_ivae(corpus_dir, out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "ivae.py", "--data", corpus_dir, "--out_dir", str(out), *IVAE_TINY,
                             *SLOW_VALID, *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def interrupt_validation(proc, times: int = 1) -> tuple:
    """Wait for the first validation, send `times` SIGINTs: (seconds from the first to the exit, output)."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("validating at step 14"):
            break
    else:
        raise AssertionError("no validation began:\n" + "".join(lines))
    time.sleep(0.5)                                                      # well inside the validation
    t0 = time.time()
    for _ in range(times):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    rest = proc.stdout.read()
    proc.wait(timeout=60)
    return time.time() - t0, "".join(lines) + rest


def test_ctrl_c_during_validation_stops_at_once_and_resume_matches(corpus_dir, tmp_path):
    straight = start_ivae(corpus_dir, tmp_path / "a")
    assert straight.wait(timeout=300) == 0, straight.stdout.read()
    proc = start_ivae(corpus_dir, tmp_path / "b")
    seconds, output = interrupt_validation(proc)
    assert seconds < 2.0, output                                         # the validation alone takes ~4 s
    assert proc.returncode == 130 and "Traceback" not in output          # 128 + SIGINT, as a shell expects
    assert "interrupted at step 14: checkpoint saved" in output
    ckpt = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 14 and ckpt["validated"] is False             # saved before the validation
    resumed = start_ivae(corpus_dir, tmp_path / "b", "--resume")
    output = resumed.stdout.read()
    assert resumed.wait(timeout=300) == 0, output
    assert "validating at step 14" in output                             # the interrupted validation redone
    skip = {"train_time_s", "device", "test_seconds"}   # wall times vary
    a, b = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("a", "b"))
    assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}
    def valid_rows(run):                                             # every column but the wall times
        rows = data.CsvLog(str(tmp_path / run / "log.csv"), read_only=True).rows()
        return [{k: v for k, v in r.items() if k != "val_seconds"} for r in rows if r["split"] == "valid"]
    assert [r["step"] for r in valid_rows("b")] == ["14", "28"]
    assert valid_rows("b") == valid_rows("a")


def test_a_second_ctrl_c_is_one_line_not_a_traceback(corpus_dir, tmp_path):
    proc = start_ivae(corpus_dir, tmp_path / "c")
    seconds, output = interrupt_validation(proc, times=2)
    assert proc.returncode in (130, -signal.SIGINT) and "Traceback" not in output, output
    assert torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=True)["step"] == 14


def test_ctrl_c_stops_the_final_test_of_a_background_run(corpus_dir, tmp_path):
    """A job started with & by a script inherits SIGINT ignored; training catches it (Run.training), and so
    must the test that follows (minutes long at full size): one line, exit 130, the checkpoints kept."""
    start_ivae(corpus_dir, tmp_path / "t", "--max_steps", "3").wait(timeout=300)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "ivae.py", "--out_dir", str(tmp_path / "t"), "--eval_only",
                             "--iw_samples", "100000", "--cpu"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("parameters:"):                               # the test starts next
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    output = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=30) == 130 and "stopped by Ctrl-C" in output and "Traceback" not in output, output


# ----------------------------------------------------------------------------------------------------
# 5. The smaller holes
# ----------------------------------------------------------------------------------------------------

def test_csv_log_keeps_every_column_of_every_row(tmp_path):
    log = data.CsvLog(str(tmp_path / "log.csv"))
    log.write({"step": 1, "split": "valid", "rec": 3.5})
    log.write({"step": 2, "split": "test", "rec": 3.0, "selected_step": 1, "device": "cpu"})
    rows = log.rows()
    assert rows[0] == {"step": "1", "split": "valid", "rec": "3.5", "selected_step": "", "device": ""}
    assert rows[1] == {"step": "2", "split": "test", "rec": "3.0", "selected_step": "1", "device": "cpu"}
    # Resumed at step 2: the old test row at step 2 goes (the resumed run writes its own), the columns stay.
    resumed = data.CsvLog(str(tmp_path / "log.csv"), resume_step=2)
    resumed.write({"step": 2, "split": "test", "rec": 2.5})
    assert [r["rec"] for r in resumed.rows()] == ["3.5", "2.5"] and "device" in resumed.rows()[0]


def test_eval_only_leaves_the_log_byte_identical_and_train_time_sums_processes(corpus_dir, tmp_path, capsys):
    out = tmp_path / "run"
    first = run_vae(corpus_dir, out, "--epochs", "2", "--max_steps", "20")      # best.pt at 14, end at 20
    test_row = data.CsvLog(str(out / "log.csv"), read_only=True).rows()[-1]
    assert test_row["split"] == "test" and test_row["selected_step"] == "14" and test_row["device"]
    assert float(test_row["train_time_s"]) == first["train_time_s"]
    log_bytes, curves = (out / "log.csv").read_bytes(), (out / "curves.png").stat().st_size
    again = run_vae(corpus_dir, out, "--eval_only")
    assert (out / "log.csv").read_bytes() == log_bytes                         # not truncated at best.pt's step
    assert again["step"] == 14 and (out / "curves.png").stat().st_size == curves
    # Resumed after training ended, nothing is left to train: train_time_s is still the run's total.
    trained = torch.load(out / "checkpoint.pt", weights_only=True)["train_time_s"]
    assert trained > 0
    resumed = run_vae(corpus_dir, out, "--epochs", "2", "--max_steps", "20", "--resume")
    assert resumed["train_time_s"] >= round(trained, 1)


def test_skip_test_keeps_the_test_row_and_the_config_and_adds_the_extras(corpus_dir, tmp_path, capsys):
    out = tmp_path / "run"
    first = run_vae(corpus_dir, out, "--epochs", "2", "--max_steps", "20")      # best.pt at 14
    assert first["test_seconds"] >= 0                                       # the final test's wall time
    config = (out / "config.json").read_bytes()
    # The finished run's test row is reused, not recomputed: only the extras are added to metrics.json.
    extra = run_vae(corpus_dir, out, "--eval_only", "--skip_test", "--fwd_rev_ppl", "--fwd_rev_samples", "8")
    saved = json.loads((out / "metrics.json").read_text())
    assert {k: extra[k] for k in first} == first and extra["fwd_ppl"] > 1 and saved["fwd_ppl"] == extra["fwd_ppl"]
    assert (out / "config.json").read_bytes() == config                      # --eval_only keeps the run's config
    # A test row of another checkpoint is refused; --skip_test alone is refused.
    (out / "metrics.json").write_text(json.dumps({**saved, "selected_step": 99}))
    argv = ["--data", corpus_dir, "--out_dir", str(out), *VAE_TINY, "--skip_test"]
    assert "step 99" in parser_error(capsys, vae.main, argv + ["--eval_only"])
    assert "goes with --eval_only" in parser_error(capsys, vae.main, argv + ["--resume"])


def test_eval_only_without_checkpoint_names_both_files(corpus_dir, tmp_path, capsys):
    err = parser_error(capsys, vae.main, ["--data", corpus_dir, "--out_dir", str(tmp_path), "--eval_only", "--cpu"])
    assert "no checkpoint" in err and "best.pt and checkpoint.pt" in err
    err = parser_error(capsys, vae.main, ["--data", corpus_dir, "--out_dir", str(tmp_path / "none"), "--resume"])
    assert "no checkpoint" in err and not (tmp_path / "none").exists()


def test_a_byte_order_mark_is_not_part_of_the_first_word(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_bytes("\ufeffaer banknote\nthe cat\n".encode("utf-8"))
    corpus = data.load_corpus(str(tmp_path), verbose=False)
    assert "aer" in corpus.vocab and not any(w.startswith("\ufeff") for w in corpus.vocab.itos)


def test_a_bad_byte_in_a_dialog_costs_one_utterance(tmp_path):
    path = tmp_path / "dialogues.txt"
    path.write_bytes(b"Hi there . __eou__ Caf\xe9 time ? __eou__ Sure . __eou__\nBye . __eou__ Bye . __eou__\n")
    spec = data.CORPORA["dailydialog"]
    report = data.LineReport()
    dialogs = data.read_dialogs([str(path)], spec, report)
    assert [[" ".join(w) for w, _ in d] for d in dialogs] == [["hi there .", "sure ."], ["bye .", "bye ."]]
    assert [s for _, s in dialogs[0]] == [0, 0]                          # speakers as in the file: 1st, 3rd
    assert report["not_utf8_utterance"] == 1 and report["not_utf8"] == 0


def test_style_messages_split_hint_and_fasttext_lr(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("IVAE_DATA_DIR", raising=False)
    folder = tmp_path / "yelp_style"
    folder.mkdir()
    for split in ("dev", "test"):                                         # no sentiment.train.*
        for label in (0, 1):
            (folder / f"sentiment.{split}.{label}").write_text("good food\n")
    err = parser_error(capsys, style_transfer.main, ["--data_dir", str(tmp_path), "--out_dir",
                                                     str(tmp_path / "run"), "--cpu"])
    assert "sentiment.train.0" in err and "--split no_train" in err
    err = parser_error(capsys, style_transfer.main, ["--data_dir", str(tmp_path), "--out_dir",
                                                     str(tmp_path / "run"), "--fasttext_lr", "0"])
    assert "--fasttext_lr must be > 0" in err


# ----------------------------------------------------------------------------------------------------
# 6. Issue 31: the tracebacks left. NaN learning rates, a style batch of one sentence, a corpus that is
#    mostly not text, a split that keeps no line, and the dialog lines lost to bad bytes
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("script,flag", [("vae", "--lr"), ("ivae", "--lr"), ("ivae", "--nu_lr"),
                                         ("ivae_mi", "--lr"), ("ivae_mi", "--nu_lr"),
                                         ("style_transfer", "--adv_lr"), ("style_transfer", "--ae_lr")])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_float_option_is_a_parser_error(script, flag, value, tmp_path, capsys, monkeypatch):
    """data.check_bounds: argparse reads "nan" as a float and NaN passes every `< low` test, so it reached
    torch's optimiser. Now one message before any work (the corpus folder does not even exist)."""
    monkeypatch.delenv("IVAE_DATA_DIR", raising=False)
    err = parser_error(capsys, SCRIPTS[script], [f"{flag}={value}", "--data_dir", str(tmp_path / "none"),
                                                 "--out_dir", str(tmp_path / "run"), "--cpu"])
    assert f"{flag} must be a finite number, got {float(value)}" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_style_side_that_leaves_one_sentence_alone_is_merged_and_said_once(tmp_path, capsys, monkeypatch):
    """9 negative sentences at batch 8 (the issue's 65 at 64) left a batch of one, on which the prior's and
    the classifier's BatchNorm raise; the lone sentence now joins another batch, said once; --batch_size 1
    is a parser error, and a side of one sentence a message."""
    monkeypatch.delenv("IVAE_DATA_DIR", raising=False)
    folder = tmp_path / "yelp_style"
    folder.mkdir()
    for split, n_neg in (("train", 9), ("dev", 4), ("test", 4)):
        (folder / f"sentiment.{split}.0").write_text("".join(f"bad {'very ' * (i % 4)}food\n" for i in range(n_neg)))
        (folder / f"sentiment.{split}.1").write_text("".join(f"good food {'very ' * (i % 3)}here\n" for i in range(8)))
    corpus = data.load_style_corpus(str(tmp_path), verbose=False)
    examples = corpus.examples["train"]
    for epoch in range(3):
        plan = data.balanced_plan(examples, 8, seed=0, epoch=epoch)
        negatives = [i for neg, _ in plan for i in neg]
        assert min(len(b) for pair in plan for b in pair) >= 2
        assert sorted(negatives) == [i for i, e in enumerate(examples) if e.label == 0]   # none lost
    note = data.lone_sentence_note(examples, 8)
    assert "9 negative sentences at --batch_size 8 leave one alone" in note and "positive" not in note
    tiny = ["--emb_dim", "8", "--hidden", "8", "--noise_dim", "4", "--prior_noise", "4", "--prior_width", "8",
            "--nu_width", "8", "--cls_width", "8", "--eval_samples", "2", "--fasttext_dim", "4",
            "--fasttext_buckets", "16", "--fasttext_epochs", "1", "--max_decode_len", "4", "--val_sentences", "0",
            "--cpu", "--threads", "1", "--classifier_dir", str(tmp_path / "clf"), "--data_dir", str(tmp_path)]
    result = style_transfer.main([*tiny, "--batch_size", "8", "--max_steps", "2", "--out_dir", str(tmp_path / "a")])
    assert result["step"] == 2
    assert capsys.readouterr().out.count("leave one alone") == 1
    err = parser_error(capsys, style_transfer.main, [*tiny, "--batch_size", "1", "--out_dir", str(tmp_path / "b")])
    assert "--batch_size must be >= 2" in err and "BatchNorm" in err
    (folder / "sentiment.train.1").write_text("good food\n")
    err = parser_error(capsys, style_transfer.main, [*tiny, "--out_dir", str(tmp_path / "c")])
    assert "holds 1 positive sentence(s)" in err and "Traceback" not in err


def test_a_corpus_of_mostly_unusable_lines_stops_unless_allowed(tmp_path, capsys, table1):
    """742 lines of binary garbage and 2 sentences trained without a word; now the split stops with how
    many lines were skipped and why, and --allow_bad_lines goes on with the 2 sentences."""
    import random
    r = random.Random(1)
    garbage = [bytes(r.randrange(128, 256) for _ in range(r.randint(10, 60))) for _ in range(742)]   # not UTF-8
    (tmp_path / "train.txt").write_bytes(b"\n".join(garbage + [b"the cat sat on the mat", b"a dog ran"]) + b"\n")
    for split in ("valid", "test"):
        (tmp_path / f"{split}.txt").write_text("the cat\na dog\n")
    with pytest.raises(data.DataError) as err:
        data.load_corpus(str(tmp_path), verbose=False)
    msg = str(err.value)
    assert "split 'train'" in msg and "742 lines skipped as unusable and only 2 kept" in msg
    assert "742 lines with non-UTF-8 bytes skipped" in msg and "--allow_bad_lines" in msg
    corpus = data.load_corpus(str(tmp_path), verbose=False, allow_bad_lines=True)
    assert len(corpus.examples["train"]) == 2
    with pytest.raises(SystemExit) as exit_:                              # the command line: exit 2, one message
        table1.main(["--data", str(tmp_path)])
    assert exit_.value.code == 2 and "742 lines skipped" in capsys.readouterr().err
    assert table1.main(["--data", str(tmp_path), "--allow_bad_lines"]) == 0
    assert "allow_bad_lines" in {f.name for f in dataclasses.fields(data.RunConfig)}   # every script's flag
    # a few bad lines among many good ones are skipped, counted and reported, as before
    (tmp_path / "train.txt").write_bytes(b"\n".join(garbage[:3] + [b"the cat sat"] * 4) + b"\n")
    assert len(data.load_corpus(str(tmp_path), verbose=False).examples["train"]) == 4


def test_a_split_with_no_usable_line_says_why(tmp_path):
    for split, text in (("train", "the cat\n"), ("valid", "the cat\n"), ("test", " ".join(["w"] * 201) + "\n")):
        (tmp_path / f"{split}.txt").write_text(text)
    with pytest.raises(data.DataError) as err:
        data.load_corpus(str(tmp_path), verbose=False)
    assert "split 'test'" in str(err.value) and "holds no usable line" in str(err.value)
    assert "1 over-long sentences dropped (over 200 words)" in str(err.value)
    (tmp_path / "test.txt").write_text("")
    with pytest.raises(data.DataError, match="holds no usable line; the file is empty"):
        data.load_corpus(str(tmp_path), verbose=False)


def test_dialog_lines_lost_to_bad_bytes_are_counted(tmp_path):
    """A DailyDialog line whose every utterance has bad bytes, and a Switchboard line whose JSON a bad byte
    broke, were dropped without a count (the utterance count alone); now each is a non-UTF-8 line."""
    daily = tmp_path / "dialogues.txt"
    daily.write_bytes(b"Hi . __eou__ Bye . __eou__\n\xff\xfe . __eou__ Caf\xe9 ? __eou__\n__eou__\n")
    report = data.LineReport()
    assert len(data.read_dialogs([str(daily)], data.CORPORA["dailydialog"], report)) == 1
    assert report == {"not_utf8_utterance": 2, "not_utf8": 1, "empty": 1}
    assert "1 lines with non-UTF-8 bytes skipped" in report.summary()
    good = json.dumps({"utts": [["A", "hello there", []], ["B", "hi", []]]}).encode()
    swb = tmp_path / "test.jsonl"
    swb.write_bytes(b"\n".join([good, b"\xff" + good, b'{"utts": [["A", 5, []]]}']) + b"\n")
    report = data.LineReport()
    assert len(data.read_dialogs([str(swb)], data.CORPORA["switchboard"], report)) == 1
    assert report == {"not_utf8": 1, "malformed": 1}

"""dialog.py: metric wiring on hand examples, a tiny dialog corpus main([...]) run with resume, bad flags.
(The context-window construction is tested on a hand example in test_data.py.)"""
import json

import numpy as np
import pytest

import dialog
import metrics

TINY = ["--emb_dim", "8", "--utt_hidden", "8", "--ctx_hidden", "8", "--latent", "4", "--mlp_width", "8",
        "--batch_size", "4", "--samples_per_context", "3", "--max_decode_len", "6", "--log_every", "5", "--cpu",
        "--epochs", "2"]


@pytest.fixture(scope="module")
def dialog_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("dd")
    lines = ["Hi , how are you ? __eou__ Fine , thanks . __eou__ Good to hear . __eou__",
             "Where is the bank ? __eou__ Over there . __eou__ Thank you ! __eou__ You are welcome . __eou__",
             "Do you like tea ? __eou__ Yes , I do . __eou__"]
    for split, folder in (("train", "train"), ("validation", "validation"), ("test", "test")):
        path = root / "dailydialog" / folder / f"dialogues_{split}.txt"
        path.parent.mkdir(parents=True)
        path.write_text("\n".join(lines * (3 if split == "train" else 1)) + "\n")
    (root / "vec.txt").write_text("fine 1 0\nthanks 0 1\ngood 1 1\nyes 0.5 0.5\n")
    return str(root)


def test_response_scores_wiring():
    hyps = [[["fine", "thanks"], ["good"]], [["yes", "i", "do"], ["yes", "yes"]]]
    refs = [["fine", ",", "thanks", "."], ["yes", ",", "i", "do", "."]]
    vectors = {"fine": np.array([1.0, 0.0]), "thanks": np.array([0.0, 1.0]), "good": np.array([1.0, 1.0]),
               "yes": np.array([0.5, 0.5])}
    out = dialog.response_scores(hyps, refs, vectors, bleu_n=3)
    assert out["bleu_r"] == pytest.approx(metrics.bleu_recall_precision(hyps, refs, n=3)["bleu_r"])
    assert out["bleu4_p"] == pytest.approx(metrics.bleu_recall_precision(hyps, refs, n=4)["bleu_p"])
    assert out["bow_a"] == pytest.approx(metrics.bow_metrics(hyps, refs, vectors)["bow_a"])
    assert out["intra_dist1"] == pytest.approx((metrics.distinct_intra(hyps[0], 1) + metrics.distinct_intra(hyps[1], 1)) / 2)
    assert out["inter_dist2"] == pytest.approx((metrics.distinct_inter(hyps[0], 2) + metrics.distinct_inter(hyps[1], 2)) / 2)
    assert out["inter_dist1"] == pytest.approx((3 / 3 + 3 / 5) / 2)


def test_tiny_run_with_resume(dialog_dir, tmp_path):
    def run(out, *extra):
        return dialog.main(["--data_dir", dialog_dir, "--out_dir", str(out), "--embeddings",
                            f"{dialog_dir}/vec.txt", *TINY, *extra])
    straight = run(tmp_path / "a")
    run(tmp_path / "b", "--max_steps", "3")
    resumed = run(tmp_path / "b", "--resume")
    skip = {"train_time_s", "device"}
    assert {k: v for k, v in resumed.items() if k not in skip} == {k: v for k, v in straight.items() if k not in skip}
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    for key in ("bleu_r", "bleu_p", "bleu_f1", "bow_a", "bow_e", "bow_g", "intra_dist1", "intra_dist2",
                "inter_dist1", "inter_dist2", "bleu4_f1"):
        assert key in saved, key
    assert saved["n_contexts"] == 9                                      # 3 + 4 + 2 responses in the test dialogs
    text = (tmp_path / "a" / "responses.txt").read_text()
    assert "context> <d>" in text and text.count("sample 2>") == 9
    assert (tmp_path / "a" / "log.csv").exists() and (tmp_path / "a" / "curves.png").exists()


@pytest.mark.parametrize("flags, message", [
    (["--beta", "lots"], "--beta"),
    (["--embeddings", "/no/such/file"], "--embeddings"),
    (["--data", "movies"], "invalid choice"),
    (["--samples_per_context", "0"], "--samples_per_context"),
])
def test_bad_flags(dialog_dir, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit):
        dialog.main(["--data_dir", dialog_dir, "--out_dir", str(tmp_path), "--cpu", *flags])
    assert message in capsys.readouterr().err

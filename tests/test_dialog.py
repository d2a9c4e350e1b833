"""dialog.py: metric wiring on hand examples, a tiny dialog corpus main([...]) run with resume, bad flags.
(The context-window construction is tested on a hand example in test_data.py.)"""
import io
import json

import numpy as np
import pytest
import torch

import data
import dialog
import metrics

TINY = ["--emb_dim", "8", "--utt_hidden", "8", "--ctx_hidden", "8", "--latent", "4", "--mlp_width", "8",
        "--batch_size", "4", "--samples_per_context", "3", "--max_decode_len", "6", "--log_every", "5", "--cpu",
        "--epochs", "2", "--threads", "1"]


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
    (root / "vec.txt").write_text("fine 1 0 0 0 0 0 0 2\nthanks 0 1 0 0 0 0 0 2\ngood 1 1 0 0 0 0 0 2\n"
                                  "yes 0.5 0.5 0 0 0 0 0 2\n")
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
    skip = {"train_time_s", "device", "test_seconds"}   # wall times vary
    assert {k: v for k, v in resumed.items() if k not in skip} == {k: v for k, v in straight.items() if k not in skip}
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    for key in ("selected_step", "bleu_r", "bleu_p", "bleu_f1", "bow_a", "bow_e", "bow_g", "intra_dist1", "intra_dist2",
                "inter_dist1", "inter_dist2", "bleu4_f1"):
        assert key in saved, key
    assert saved["n_contexts"] == 9                                      # 3 + 4 + 2 responses in the test dialogs
    text = (tmp_path / "a" / "responses.txt").read_text()
    assert "context> <d>" in text and text.count("sample 2>") == 9
    assert (tmp_path / "a" / "log.csv").exists() and (tmp_path / "a" / "curves.png").exists()
    assert (tmp_path / "a" / "best.pt").exists()
    best = data.load_checkpoint(str(tmp_path / "a" / "best.pt"), "cpu")
    valid = [r for r in data.CsvLog(str(tmp_path / "a" / "log.csv"), resume_step=10 ** 9).rows() if r["split"] == "valid"]
    assert best["best"] == pytest.approx(min(float(r["rec"]) for r in valid)) and saved["selected_step"] == best["step"]


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



# ---- issue 16: BLEU with </s>, embeddings, dropout, fresh critic samples, your own context ----

def test_bleu_keeps_end_token_as_dialogwae():
    """DialogWAE's sim_bleu (and the authors'): nltk sentence_bleu, method7, weights (1/3, 1/3, 1/3), on
    tokens from indexes2sent, which keep </s>. Hand example: ids -> tokens, then the scores."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    vocab = data.Vocab(["i", "am", "fine", "thanks", "ok"])
    ref_ids = vocab.encode(["i", "am", "fine", "thanks"]) + [data.PAD_ID]         # <s> i am fine thanks </s> <pad>
    hyp_ids = [[vocab.stoi["i"], vocab.stoi["am"], vocab.stoi["fine"], data.EOS_ID, data.PAD_ID],
               [vocab.stoi["ok"], vocab.stoi["ok"], vocab.stoi["ok"]]]            # the second never ends
    ref = dialog.bleu_tokens(ref_ids, vocab)
    hyps = [dialog.bleu_tokens(h, vocab) for h in hyp_ids]
    assert ref == ["i", "am", "fine", "thanks", "</s>"]
    assert hyps == [["i", "am", "fine", "</s>"], ["ok", "ok", "ok"]]

    def sim_bleu(hyps, ref):                                             # DialogWAE metrics.py, as written
        scores = []
        for hyp in hyps:
            try:
                scores.append(sentence_bleu([ref], hyp, smoothing_function=SmoothingFunction().method7,
                                            weights=[1. / 3, 1. / 3, 1. / 3]))
            except Exception:
                scores.append(0.0)
        return np.max(scores), np.mean(scores)

    r, p = sim_bleu(hyps, ref)
    out = dialog.response_scores([hyps], [ref], {}, bleu_n=3)
    assert out["bleu_r"] == pytest.approx(r) and out["bleu_p"] == pytest.approx(p)
    without = metrics.bleu_recall_precision([[h[:3] for h in hyps]], [ref[:4]], n=3)
    assert out["bleu_r"] != pytest.approx(without["bleu_r"])            # the end token matters
    assert out["inter_dist1"] == pytest.approx(4 / 6)                    # Distinct sees words only: i am fine ok


def test_embeddings_must_match_emb_dim(dialog_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        dialog.main(["--data_dir", dialog_dir, "--out_dir", str(tmp_path), *TINY, "--emb_dim", "5",
                     "--embeddings", f"{dialog_dir}/vec.txt"])
    assert "8-d" in capsys.readouterr().err


def test_embedding_rows_and_dropouts():
    cfg = dialog.Config(emb_dim=8, utt_hidden=8, ctx_hidden=8, latent=4, mlp_width=8)
    torch.manual_seed(0)
    model = dialog.DialogModel(30, 8, cfg)
    w = model.emb.weight.detach()
    assert float(w.abs().max()) <= 0.1 and float(w[data.PAD_ID].abs().max()) == 0.0   # "small random"
    assert model.ctx_drop.p == 0.25 and model.drop.p == 0.5
    x_in = torch.tensor([[1, 5, 6, 7]])
    z, c = torch.randn(1, 4), torch.randn(1, 8)
    model.train()
    a, _ = model.decode_logits(x_in, z, c)
    b, _ = model.decode_logits(x_in, z, c)
    assert not torch.allclose(a, b)                                      # dropout on the decoder's inputs
    model.eval()
    assert torch.allclose(model.decode_logits(x_in, z, c)[0], model.decode_logits(x_in, z, c)[0])


def test_critic_updates_draw_fresh_posterior_samples(dialog_dir, monkeypatch):
    corpus = data.load_corpus("dailydialog", dialog_dir, ("train",), max_context=10)
    cfg = dialog.Config(emb_dim=8, utt_hidden=8, ctx_hidden=8, latent=4, mlp_width=8, nu_steps=5)
    model = dialog.DialogModel(len(corpus.vocab), 8, cfg)
    opts = dialog.make_optimizers(model, cfg)
    calls = []
    real = model.posterior.forward
    monkeypatch.setattr(model.posterior, "forward", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    batch = data.collate(corpus.examples["train"][:4])
    dialog.train_step(model, opts, batch, 1.0, cfg)
    assert len(calls) == cfg.nu_steps + 2                                # 5 critic updates + rec + KL step


def test_answer_your_own_context(dialog_dir, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    with pytest.raises(SystemExit):
        dialog.main(["--out_dir", out, "--eval_only", "--context", "hi .", "--cpu"])
    assert "no checkpoint" in capsys.readouterr().err
    dialog.main(["--data_dir", dialog_dir, "--out_dir", out, *TINY, "--max_steps", "3"])
    capsys.readouterr()
    res = dialog.main(["--out_dir", out, "--eval_only", "--context", "hi .", "--context", "how are you zyzzyva ?",
                       "--samples_per_context", "10", "--cpu"])
    cap = capsys.readouterr()
    assert len(res["responses"]) == 10 and cap.out.count("sample ") == 10
    assert "zyzzyva" in cap.err and "vocabulary" in cap.err
    monkeypatch.setattr("sys.stdin", io.StringIO("hi .\n\nhow are\nyou ?\n"))
    res = dialog.main(["--out_dir", out, "--eval_only", "--context", "-", "--cpu", "--temperature", "0.8"])
    assert res["context"] == ["hi .", "how are you ?"] and len(res["responses"]) == 10     # Table 8: 10
    with pytest.raises(SystemExit):
        dialog.main(["--out_dir", out, "--context", "hi .", "--cpu"])
    assert "--eval_only" in capsys.readouterr().err


def test_sampling_decode_differs_from_greedy():
    cfg = dialog.Config(emb_dim=8, utt_hidden=8, ctx_hidden=8, latent=4, mlp_width=8)
    torch.manual_seed(0)
    model = dialog.DialogModel(30, 8, cfg).eval()
    z, c = torch.randn(6, 4), torch.randn(6, 8)
    greedy = dialog.decode(model, z, c, 8)
    assert greedy == dialog.decode(model, z, c, 8)
    assert dialog.decode(model, z, c, 8, temperature=5.0, generator=torch.Generator().manual_seed(1)) != greedy


def test_bf16_autocast_keeps_losses_and_nu_in_fp32(dialog_dir):
    """--precision bf16: the critic's nu (before exp) and the reconstruction NLL come out fp32 under
    autocast, and one training step's losses match fp32's closely."""
    import copy
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    corpus = data.load_corpus("dailydialog", dialog_dir, ("train",), max_context=10)
    cfg = dialog.Config(emb_dim=8, utt_hidden=8, ctx_hidden=8, latent=4, mlp_width=8, dropout=0.0, ctx_dropout=0.0)
    torch.manual_seed(0)
    model = dialog.DialogModel(len(corpus.vocab), 8, cfg)
    batch = data.collate(corpus.examples["train"][:4])
    with torch.no_grad(), bf16():
        c = model.encode_context(batch)
        z = model.prior(c)
        assert z.dtype == torch.bfloat16                                 # autocast took effect
        assert model.critic(z, c).dtype == torch.float32
        assert model.nll(batch.tokens, z, c).dtype == torch.float32
    twin = copy.deepcopy(model)
    torch.manual_seed(1)
    lo = dialog.train_step(model, dialog.make_optimizers(model, cfg), batch, 1.0, cfg, bf16)
    torch.manual_seed(1)
    hi = dialog.train_step(twin, dialog.make_optimizers(twin, cfg), batch, 1.0, cfg)
    for k in ("rec", "kl"):
        assert float(lo[k]) == pytest.approx(float(hi[k]), rel=0.05, abs=0.02), k
    assert float(lo["rec"]) != float(hi["rec"])                          # the iteration did run under bf16

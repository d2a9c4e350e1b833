"""dialog.py: metric wiring on hand examples, a tiny dialog corpus main([...]) run with resume, bad flags.
(The context-window construction is tested on a hand example in test_data.py.)"""
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import data
import dialog
import metrics

TINY = ["--emb_dim", "8", "--utt_hidden", "8", "--ctx_hidden", "8", "--latent", "4", "--mlp_width", "8",
        "--critic_width", "8", "--batch_size", "4", "--samples_per_context", "3", "--max_decode_len", "6", "--log_every", "5", "--cpu",
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
    assert out["bleu_nltk34_f1"] == pytest.approx(metrics.bleu_recall_precision(hyps, refs, 3, nltk34=True)["bleu_f1"])
    assert out["bleu_nltk34_f1"] > out["bleu_f1"]                        # nltk 3.4's method4 inflates short responses
    assert out["bow_a"] == pytest.approx(metrics.bow_metrics(hyps, refs, vectors)["bow_a"])
    assert out["intra_dist1"] == pytest.approx((metrics.distinct_intra(hyps[0], 1) + metrics.distinct_intra(hyps[1], 1)) / 2)
    assert out["inter_dist2"] == pytest.approx((metrics.distinct_inter(hyps[0], 2) + metrics.distinct_inter(hyps[1], 2)) / 2)
    assert out["inter_dist1"] == pytest.approx((3 / 3 + 3 / 5) / 2)


def test_test_row_scores_each_context_against_the_next_ones_reference(dialog_dir, monkeypatch):
    """The control beside Table 8: the same responses against the NEXT context's reference (`*_other`)."""
    corpus = data.load_corpus("dailydialog", dialog_dir, ("test",), max_context=10)
    cfg = dialog.Config(emb_dim=8, utt_hidden=8, ctx_hidden=8, latent=4, mlp_width=8, critic_width=8,
                        samples_per_context=2, max_decode_len=4)
    calls = []
    monkeypatch.setattr(dialog, "response_scores", lambda hyps, refs, vectors, n: (
        calls.append((hyps, refs)), {"bleu_f1": float(len(calls)), "inter_dist1": 0.5})[1])
    row, (_, refs, hyps) = dialog.evaluate(dialog.DialogModel(len(corpus.vocab), 8, cfg), corpus, "test", cfg,
                                           torch.device("cpu"), {})
    assert len(calls) == 2 and calls[0] == (hyps, refs) and calls[1][0] is hyps
    assert calls[1][1] == refs[1:] + refs[:1] and refs[1:] + refs[:1] != refs
    assert row["bleu_f1"] == 1.0 and row["bleu_f1_other"] == 2.0 and "inter_dist1_other" not in row


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
                "inter_dist1", "inter_dist2", "bleu4_f1", "bleu_f1_other", "bleu_nltk34_f1_other", "bow_g_other"):
        assert key in saved, key
    assert saved["n_contexts"] == 9                                      # 3 + 4 + 2 responses in the test dialogs
    text = (tmp_path / "a" / "responses.txt").read_text()
    assert "context> <d>" in text and text.count("sample 2>") == 9
    assert (tmp_path / "a" / "log.csv").exists() and (tmp_path / "a" / "curves.png").exists()
    assert (tmp_path / "a" / "best.pt").exists()
    best = data.load_checkpoint(str(tmp_path / "a" / "best.pt"), "cpu")
    valid = [r for r in data.CsvLog(str(tmp_path / "a" / "log.csv"), resume_step=10 ** 9).rows() if r["split"] == "valid"]
    assert best["best"] == pytest.approx(min(float(r["rec"]) for r in valid)) and saved["selected_step"] == best["step"]
    # issue 30: does the prior work? Every validation row and metrics.json say it (module docstring, evaluate)
    assert len(valid) == 2
    for row in valid + [saved]:
        for key in ("rec", "rec_prior", "rec_shuffled", "dual", "dual_batch", "prior_ok"):
            assert row[key] not in ("", None), key
        rec, prior, shuffled = (float(row[k]) for k in ("rec", "rec_prior", "rec_shuffled"))
        assert rec != prior and rec != shuffled and prior != shuffled      # three different z's
    assert 0.0 <= saved["prior_vs_posterior_acc"] <= 1.0 and isinstance(saved["warnings"], list)
    assert saved["prior_ok"] == int(not saved["warnings"])


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
    """Issue 30 changed the rows' init from DialogWAE's uniform(-0.1, 0.1) to the authors' N(0, 0.1^2) (their
    data.py:94, rows of words missing from the vectors file) and moved the dropouts into the encoder."""
    cfg = dialog.Config(emb_dim=8, utt_hidden=8, ctx_hidden=8, latent=4, mlp_width=8, critic_width=8)
    torch.manual_seed(0)
    model = dialog.DialogModel(300, 8, cfg)
    w = model.emb.weight.detach()[1:]
    assert float(w.std()) == pytest.approx(0.1, abs=0.01) and float(w.abs().max()) > 0.2        # normal, not uniform
    assert float(model.emb.weight.detach()[data.PAD_ID].abs().max()) == 0.0
    assert model.encoder.ctx_drop.p == 0.25 and model.encoder.drop.p == 0.5 and model.dec_drop.p == 0.5
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
    cfg = dialog.Config(emb_dim=8, utt_hidden=8, ctx_hidden=8, latent=4, mlp_width=8, critic_width=8, nu_steps=5)
    model = dialog.DialogModel(len(corpus.vocab), 8, cfg)
    opts = dialog.make_optimizers(model, cfg)
    calls = []
    real = model.posterior.forward
    monkeypatch.setattr(model.posterior, "forward", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    batch = data.collate(corpus.examples["train"][:4])
    dialog.train_step(model, opts, batch, 1.0, cfg)
    assert len(calls) == cfg.nu_steps + 2                                # rec + KL step + 5 critic updates


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
    cfg = dialog.Config(emb_dim=8, utt_hidden=8, ctx_hidden=8, latent=4, mlp_width=8, critic_width=8)
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
    cfg = dialog.Config(emb_dim=8, utt_hidden=8, ctx_hidden=8, latent=4, mlp_width=8, critic_width=8, dropout=0.0,
                        ctx_dropout=0.0)
    torch.manual_seed(0)
    model = dialog.DialogModel(len(corpus.vocab), 8, cfg)
    batch = data.collate(corpus.examples["train"][:4])
    with torch.no_grad(), bf16():
        c = model.encoder(batch)[0]
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


# ---- issue 30: the authors' architecture and update structure, the diagnostics, the fast encoders ----

def test_architecture_is_the_authors():
    """models_dailydial.py (M:line) at the default sizes: BatchNorm in q, p, both generators and the critic
    (M:127-134, 164-171, 280-300, 305-314), their activations and widths, the init (M:142-145, 210-215, 330-333,
    orthogonal GRU weights M:29-32, 81-84, 211-213), embedding 200 (T:18)."""
    cfg = dialog.Config()
    torch.manual_seed(0)
    model = dialog.DialogModel(40, cfg.emb_dim, cfg)
    L, BN = torch.nn.Linear, torch.nn.BatchNorm1d
    kinds = lambda seq: [type(m) for m in seq]
    assert model.emb.embedding_dim == 200 and cfg.critic_width == 600
    assert kinds(model.nu) == [L, BN, torch.nn.LeakyReLU, L, BN, torch.nn.LeakyReLU, L]
    assert (model.nu[0].in_features, model.nu[0].out_features, model.nu[3].out_features) == (500, 600, 600)
    assert model.nu[2].negative_slope == 0.2 and model.nu[6].out_features == 1
    for net, width_in in ((model.posterior, 900), (model.prior, 300)):
        assert kinds(net.gauss) == [L, BN, torch.nn.Tanh, L, BN, torch.nn.Tanh, L]
        assert (net.gauss[0].in_features, net.gauss[0].out_features, net.gauss[6].out_features) == (width_in, 200, 400)
        assert kinds(net.generator) == [L, BN, torch.nn.ReLU, L, BN, torch.nn.ReLU, L]
        assert {m.out_features for m in net.generator if isinstance(m, L)} == {200}
    for net in (model.posterior, model.prior, model.nu):
        for m in net.requires_grad_(False).modules():
            if isinstance(m, L):
                assert 0.019 < float(m.weight.abs().max()) <= 0.02 and float(m.bias.abs().max()) == 0.0
            if isinstance(m, BN):
                assert (m.eps, m.momentum) == (1e-5, 0.1)
    assert 0.099 < float(model.out.weight.detach().abs().max()) <= 0.1 and not model.out.bias.detach().any()
    for gru in (model.encoder.utt_rnn, model.encoder.ctx_rnn, model.dec_rnn):
        for name, w in gru.named_parameters():
            if w.dim() > 1:                                              # (3H, In): orthonormal columns
                w = w.detach()
                assert torch.allclose(w.T @ w, torch.eye(w.shape[1]), atol=1e-4), name


@pytest.mark.parametrize("bidirectional", [True, False])
def test_gru_final_states_is_nn_gru_on_packed_rows(bidirectional):
    """The fast encoders' GRU (written out for speed) against torch's nn.GRU on a PackedSequence: the same
    last states and the same gradients, rows of many lengths."""
    torch.manual_seed(0)
    gru = torch.nn.GRU(5, 7, batch_first=True, bidirectional=bidirectional)
    lengths = torch.tensor([3, 1, 6, 6, 2, 5, 1, 4])
    x = torch.randn(8, 6, 5, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    _, h = gru(packed)                                                   # (D, N, H)
    ref = torch.cat(list(h), -1)
    out = dialog.gru_final_states(gru, x, lengths)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-6)
    w = torch.randn_like(ref)
    params = [x, *gru.parameters()]
    for a, b in zip(torch.autograd.grad((out * w).sum(), params), torch.autograd.grad((ref * w).sum(), params)):
        assert torch.allclose(a, b, atol=1e-5)


def test_encoder_is_the_authors_on_nn_gru(dialog_dir):
    """ContextEncoder (eval mode) against a plain reference on nn.GRU: utterances without their <s> (T:248, 258),
    the speaker one-hot, the context GRU over the C_b real utterances, the response through the same BiGRU."""
    corpus = data.load_corpus("dailydialog", dialog_dir, ("train",), max_context=10)
    cfg = dialog.Config(emb_dim=8, utt_hidden=6, ctx_hidden=5, latent=4, mlp_width=8, critic_width=8)
    torch.manual_seed(0)
    enc = dialog.DialogModel(len(corpus.vocab), 8, cfg).encoder.eval()
    batch = data.collate(corpus.examples["train"][:9])
    B, C, U = batch.context.shape

    def utterances(tokens, lengths):
        packed = torch.nn.utils.rnn.pack_padded_sequence(enc.emb(tokens), lengths, batch_first=True,
                                                         enforce_sorted=False)
        return torch.cat(list(enc.utt_rnn(packed)[1]), -1)

    with torch.no_grad():
        c, x = enc(batch)
        real = batch.utt_lengths.view(-1) > 0
        utt = torch.zeros(B * C, 12)
        utt[real] = utterances(batch.context.view(B * C, U)[real][:, 1:], batch.utt_lengths.view(-1)[real] - 1)
        inp = torch.cat([utt.view(B, C, 12), torch.nn.functional.one_hot(batch.speakers, 2).float()], -1)
        packed = torch.nn.utils.rnn.pack_padded_sequence(inp, batch.context_lengths, batch_first=True,
                                                         enforce_sorted=False)
        assert torch.allclose(c, enc.ctx_rnn(packed)[1][0], atol=1e-6)
        assert torch.allclose(x, utterances(batch.tokens[:, 1:], batch.lengths - 1), atol=1e-6)


def test_train_step_order_modes_and_optimisers(dialog_dir, monkeypatch):
    """T:253-332: 1. autoencoder (encoder with dropout), 2. posterior / prior, 3. five critic updates; steps 2-3
    see one eval-mode encoding (T:284, 312) while q, p and the critic stay in train mode (T:233: BatchNorm by
    batch statistics); the clip covers the encoders and the decoder only (T:272-273); the optimisers' parameters
    (M:316-324)."""
    corpus = data.load_corpus("dailydialog", dialog_dir, ("train",), max_context=10)
    cfg = dialog.Config(emb_dim=8, utt_hidden=8, ctx_hidden=8, latent=4, mlp_width=8, critic_width=8)
    model = dialog.DialogModel(len(corpus.vocab), 8, cfg)
    opts = dialog.make_optimizers(model, cfg)
    ids = lambda params: {id(p) for p in params}
    assert ids(opts["nu"].param_groups[0]["params"]) == ids(model.nu.parameters())
    assert ids(opts["gen"].param_groups[0]["params"]) == ids([*model.posterior.parameters(), *model.prior.parameters()])
    assert ids(opts["ae"].param_groups[0]["params"]) == ids(p for n, p in model.named_parameters()
                                                            if not n.startswith(("prior.", "nu.")))
    events = []
    for name, opt in opts.items():
        monkeypatch.setattr(opt, "step", lambda *a, _n=name, _s=opt.step, **k: (events.append(_n), _s(*a, **k))[1])
    enc_forward = model.encoder.forward
    monkeypatch.setattr(model.encoder, "forward", lambda b: (events.append(("encoder", model.encoder.training)),
                                                             enc_forward(b))[1])
    crit = model.critic
    monkeypatch.setattr(model, "critic", lambda z, c, *a: (events.append(("critic", model.nu.training,
                                                           model.posterior.training)), crit(z, c, *a))[1])
    clipped = []
    real_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda ps, *a, **k: (clipped.append(list(ps)),
                                                                                   real_clip(clipped[-1], *a, **k))[1])
    dialog.train_step(model, opts, data.collate(corpus.examples["train"][:4]), 1.0, cfg)
    assert [e for e in events if not (isinstance(e, tuple) and e[0] == "critic")] == \
        [("encoder", True), "ae", ("encoder", False), "gen"] + ["nu"] * 5
    assert {e for e in events if isinstance(e, tuple) and e[0] == "critic"} == {("critic", True, True)}
    assert ids(clipped[0]) == ids([*model.encoder.parameters(), *model.dec_rnn.parameters(), *model.out.parameters()])


def test_autoencoder_loss_is_the_token_mean(dialog_dir):
    """T:262-270: nn.CrossEntropyLoss over the batch's tokens, so the SGD step on the output bias is
    -lr * d(token mean)/d(bias), as a twin computes it from the same random draws."""
    import copy
    corpus = data.load_corpus("dailydialog", dialog_dir, ("train",), max_context=10)
    cfg = dialog.Config(emb_dim=8, utt_hidden=8, ctx_hidden=8, latent=4, mlp_width=8, critic_width=8, nu_steps=0,
                        gen_lr=0.0, clip=1e9, ae_lr=0.1)
    torch.manual_seed(0)
    model = dialog.DialogModel(len(corpus.vocab), 8, cfg)
    twin = copy.deepcopy(model).train()
    batch = data.collate(corpus.examples["train"][:5])
    torch.manual_seed(1)
    c, x = twin.encoder(batch)
    nll = twin.nll(batch.tokens, twin.posterior(torch.cat([x, c], -1)), c)
    grad, = torch.autograd.grad(nll.sum() / (batch.lengths - 1).sum(), twin.out.bias)
    torch.manual_seed(1)
    dialog.train_step(model, dialog.make_optimizers(model, cfg), batch, 1.0, cfg)
    assert torch.allclose(model.out.bias, twin.out.bias - 0.1 * grad, atol=1e-7)


def test_batchnorm_couples_the_critic_and_batch_stats_leave_running_averages():
    """The module docstring's point: with batch statistics (training) nu(z_0, c_0) moves when another sample of
    its pass moves; in eval mode it does not. critic(..., batch_stats=True) leaves the running averages alone."""
    cfg = dialog.Config(emb_dim=8, utt_hidden=8, ctx_hidden=8, latent=4, mlp_width=8, critic_width=8)
    torch.manual_seed(0)
    model = dialog.DialogModel(30, 8, cfg).eval()
    z, c = torch.randn(6, 4), torch.randn(6, 8)
    z2 = z.clone()
    z2[1] += 3.0
    running = model.nu[1].running_mean.clone()
    with torch.no_grad():
        assert model.critic(z, c)[0] == model.critic(z2, c)[0]
        assert model.critic(z, c, True)[0] != model.critic(z2, c, True)[0]
        assert torch.allclose(model.critic(z + 5.0, c, True), model.critic(z, c, True), atol=1e-5)  # blind to it
        assert not torch.allclose(model.critic(z + 5.0, c), model.critic(z, c), atol=1e-5)
        assert torch.equal(model.nu[1].running_mean, running)
        model.train()
        assert model.critic(z, c)[0] != model.critic(z2, c)[0]


def test_two_sample_accuracy():
    """metrics.two_sample_accuracy: about 0.5 on two samples of one law, near 1 on a scale change, and
    torch's global random state untouched."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, 20, generator=g), torch.randn(1000, 20, generator=g)
    state = torch.get_rng_state()
    assert abs(metrics.two_sample_accuracy(a, b) - 0.5) < 0.05
    assert metrics.two_sample_accuracy(a, 1.5 * b) > 0.8                          # 0.865
    assert torch.equal(torch.get_rng_state(), state)


def test_prior_warnings():
    good = {"rec": 40.0, "rec_prior": 50.0, "rec_shuffled": 80.0, "dual": 3.0, "dual_batch": 2.0}
    assert dialog.prior_warnings(good, 0.1) == []
    assert dialog.prior_warnings({**good, "dual_batch": None}, 0.1) == []          # no batch of two
    assert len(dialog.prior_warnings({**good, "rec_prior": 78.0}, 0.1)) == 1        # closes 2 of 40 nats
    assert len(dialog.prior_warnings({**good, "rec": 80.0, "rec_prior": 80.0}, 0.1)) == 1   # z ignored
    assert len(dialog.prior_warnings({**good, "dual": float("inf"), "dual_batch": float("nan")}, 0.1)) == 2


def test_warnings_are_loud_and_logged(dialog_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(dialog, "prior_warnings", lambda row, gap: ["the prior is broken"])
    out = tmp_path / "run"
    dialog.main(["--data_dir", dialog_dir, "--out_dir", str(out), *TINY, "--max_steps", "7"])      # 7: one epoch
    err = capsys.readouterr().err
    assert "WARNING (valid, step 7): the prior is broken" in err and "WARNING (test): the prior is broken" in err
    rows = data.CsvLog(str(out / "log.csv"), resume_step=10 ** 9).rows()
    assert [r["prior_ok"] for r in rows] == ["0", "0"]
    assert json.loads((out / "metrics.json").read_text())["warnings"] == ["the prior is broken"]


def test_random_embeddings_bow_file_and_a_batch_of_one(dialog_dir, tmp_path):
    """--embed_init random: a 6-d model with the 8-d vectors file for BOW only. --batch_size 2 leaves one
    response for the epoch's last batch: skipped (BatchNorm needs two; the authors drop the remainder)."""
    res = dialog.main(["--data_dir", dialog_dir, "--out_dir", str(tmp_path / "r"), *TINY, "--emb_dim", "6",
                       "--embeddings", f"{dialog_dir}/vec.txt", "--embed_init", "random", "--batch_size", "2",
                       "--max_steps", "14"])
    assert res["step"] == 14 and "bow_a" in res


def test_beta_schedules():
    cfg = dialog.Config()
    assert dialog.beta_at(500, 100, cfg, "dailydialog") == 1.0                    # T:296-297
    assert dialog.beta_at(0, 100, cfg, "switchboard") == pytest.approx(0.1 + 1 / 1000)   # train_swda.py:243-244
    assert dialog.beta_at(898, 100, cfg, "switchboard") < 1.0 == dialog.beta_at(899, 100, cfg, "switchboard")


def test_encoder_dropouts_in_train_mode_only(dialog_dir):
    """Dropout 0.5 on the utterance encoder's input (M:44) and 0.25 on the context GRU's input (M:103), each
    seen alone: two train-mode encodings differ, eval-mode ones do not."""
    corpus = data.load_corpus("dailydialog", dialog_dir, ("train",), max_context=10)
    batch = data.collate(corpus.examples["train"][:4])
    for drop, ctx_drop in ((0.5, 0.0), (0.0, 0.25)):
        cfg = dialog.Config(emb_dim=8, utt_hidden=8, ctx_hidden=8, latent=4, mlp_width=8, critic_width=8,
                            dropout=drop, ctx_dropout=ctx_drop)
        enc = dialog.DialogModel(len(corpus.vocab), 8, cfg).encoder
        with torch.no_grad():
            assert not torch.equal(enc.train()(batch)[0], enc(batch)[0])
            assert torch.equal(enc.eval()(batch)[0], enc(batch)[0])


def test_each_step_moves_its_objective_the_right_way(dialog_dir):
    """Step 2 lowers the dual estimate E_q nu - E_p exp(nu) + 1 (posterior and prior against a fixed critic,
    T:297-299); step 3 raises it (the critic, T:323-325). Measured on the step's own draws (no dropout, so the
    noise of q and p is all the step draws: 1 sample of q before step 2, 2 more before step 3), BatchNorm by
    batch statistics as in training."""
    corpus = data.load_corpus("dailydialog", dialog_dir, ("train",), max_context=10)
    batch = data.collate(corpus.examples["train"][:8])

    def dual(model, skip):
        model.train()
        with torch.no_grad():
            c, x = model.encoder.eval()(batch)
            torch.manual_seed(7)
            torch.randn(skip, 8, 4)                                      # the draws before the step's own
            zq, zp = model.posterior(torch.cat([x, c], -1)), model.prior(c)
            return float(metrics.dual_kl(model.critic(zq, c), model.critic(zp, c)))

    for lrs, nu_steps, skip, sign in (({"gen_lr": 1e-5, "nu_lr": 0.0}, 0, 1, -1), ({"gen_lr": 0.0, "nu_lr": 1e-5}, 1, 3, 1)):
        cfg = dialog.Config(emb_dim=8, utt_hidden=8, ctx_hidden=8, latent=4, mlp_width=8, critic_width=8, ae_lr=0.0,
                            dropout=0.0, ctx_dropout=0.0, nu_steps=nu_steps, **lrs)
        torch.manual_seed(0)
        model = dialog.DialogModel(len(corpus.vocab), 8, cfg)
        before = dual(model, skip)
        torch.manual_seed(7)
        out = dialog.train_step(model, dialog.make_optimizers(model, cfg), batch, 1.0, cfg)
        assert float(out["kl"]) == pytest.approx(before, abs=1e-6)       # the step saw these very draws
        assert sign * (dual(model, skip) - before) > 0, lrs


def test_batching_flag_reaches_the_training_batcher(dialog_dir, tmp_path, monkeypatch):
    """--batching mixed (default): random responses per batch; length: one length bucket (data.Batcher tests both)."""
    seen, batcher = [], data.Batcher
    monkeypatch.setattr(data, "Batcher", lambda *a, **k: seen.append(k.get("by_length", True)) or batcher(*a, **k))
    for i, flags in enumerate(([], ["--batching", "length"])):
        dialog.main(["--data_dir", dialog_dir, "--out_dir", str(tmp_path / str(i)), *TINY, "--max_steps", "2", *flags])
    assert seen == [False, True]


def test_nll_on_real_tokens_equals_cross_entropy_over_padded_logits():
    """DialogModel.nll runs the output layer on real tokens only (speed): the same numbers as all logits with
    ignore_index, per response, for a batch of mixed lengths."""
    cfg = dialog.Config(emb_dim=8, utt_hidden=8, ctx_hidden=8, latent=4, mlp_width=8, critic_width=8)
    torch.manual_seed(0)
    model = dialog.DialogModel(30, 8, cfg).eval()
    x = torch.tensor([[1, 5, 6, 7, 8, 2], [1, 9, 2, 0, 0, 0], [1, 4, 4, 2, 0, 0]])
    z, c = torch.randn(3, 4), torch.randn(3, 8)
    logits, _ = model.decode_logits(x[:, :-1], z, c)
    want = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], ignore_index=data.PAD_ID, reduction="none").sum(1)
    assert torch.allclose(model.nll(x, z, c), want, atol=1e-5) and want.shape == (3,)

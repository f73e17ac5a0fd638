"""BERT: input ids and segments, the embedding sum, the encoder vs nn.TransformerEncoder, MLM and NSP."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snippets.data.text import make_toy_corpus
from snippets.llm.bert import (
    CLS,
    MASK,
    PAD,
    SEP,
    SPECIAL_TOKENS,
    BERTEmbedding,
    BERTEncoder,
    BERTModel,
    MaskLM,
    NextSentencePred,
    bert_vocab,
    encode_pairs,
    get_tokens_and_segments,
    make_nsp_pairs,
    mask_tokens,
    mlm_loss,
    pretrain_bert,
    timemachine_paragraphs,
)
from tests.conftest import assert_close

F64 = torch.float64


def _within(count: int, n: int, p: float, z: float = 4.0) -> bool:
    """``count`` successes out of ``n`` are within ``z`` binomial standard deviations of ``n p``."""
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p))


def _toy_paragraphs(n_paragraphs: int, per: int, seed: int) -> list[list[list[str]]]:
    sentences = make_toy_corpus(n_paragraphs * per, torch.Generator().manual_seed(seed))
    return [[s.split() for s in sentences[i * per : (i + 1) * per]] for i in range(n_paragraphs)]


# ---------------------------------------------------------------- input representation (11.04)


def test_tokens_and_segments_of_fixed_examples() -> None:
    tokens, segments = get_tokens_and_segments(["the", "time", "machine"], ["it", "vanished"])
    assert tokens == [CLS, "the", "time", "machine", SEP, "it", "vanished", SEP]
    assert segments == [0, 0, 0, 0, 0, 1, 1, 1]
    tokens, segments = get_tokens_and_segments(["hello"])
    assert (tokens, segments) == ([CLS, "hello", SEP], [0, 0, 0])
    with pytest.raises(ValueError, match="tokens_a must not be empty"):
        get_tokens_and_segments([], ["x"])
    with pytest.raises(ValueError, match="tokens_b must be None"):
        get_tokens_and_segments(["x"], [])
    with pytest.raises(ValueError, match="must not contain special tokens"):
        get_tokens_and_segments(["x", SEP], ["y"])


@pytest.mark.parametrize("seed", range(3))
def test_embedding_equals_the_sum_of_three_lookups(seed: int, device: torch.device) -> None:
    g = torch.Generator().manual_seed(seed)
    vocab, d, max_len = (int(x) for x in torch.randint(5, 40, (3,), generator=g))
    b, n = int(torch.randint(1, 4, (1,), generator=g)), int(torch.randint(1, max_len + 1, (1,), generator=g))
    torch.manual_seed(seed)
    ours = BERTEmbedding(vocab, d, max_len, dtype=F64, device=device)
    tok, seg, pos = (nn.Embedding(m, d, dtype=F64, device=device) for m in (vocab, 2, max_len))
    for ref, mine in ((tok, ours.token), (seg, ours.segment), (pos, ours.position)):
        ref.load_state_dict(mine.state_dict())
    tokens = torch.randint(0, vocab, (b, n), generator=g).to(device)
    segments = torch.randint(0, 2, (b, n), generator=g).to(device)
    out = ours(tokens, segments)
    expected = tok(tokens) + seg(segments) + pos(torch.arange(n, device=device)[None].expand(b, n))
    assert out.shape == (b, n, d)
    assert_close(out, expected)
    grad = torch.randn(b, n, d, generator=g, dtype=F64).to(device)
    (out * grad).sum().backward()
    (expected * grad).sum().backward()
    for ref, mine in ((tok, ours.token), (seg, ours.segment), (pos, ours.position)):
        assert_close(mine.weight.grad, ref.weight.grad)
    assert_close(ours(tokens), tok(tokens) + seg(torch.zeros_like(tokens)) + pos.weight[:n])  # segments=None -> 0


def test_position_embedding_is_learned_not_sinusoidal() -> None:
    """Erratum 11.04: BERT's position table is a trained parameter (it gets a gradient and moves)."""
    torch.manual_seed(0)
    emb = BERTEmbedding(10, 8, max_len=6)
    assert isinstance(emb.position, nn.Embedding) and emb.position.weight.requires_grad
    before = emb.position.weight.detach().clone()
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    emb(torch.randint(0, 10, (2, 6))).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(emb.position.weight, before)


def test_embedding_rejects_bad_input() -> None:
    emb = BERTEmbedding(10, 4, max_len=5)
    with pytest.raises(ValueError, match="exceeds max_len=5"):
        emb(torch.zeros(1, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="tokens must be \\(B, L\\)"):
        emb(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="segments must have shape"):
        emb(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="tokens must lie in \\[0, 10\\)"):
        emb(torch.tensor([[3, 10]]))
    with pytest.raises(ValueError, match="segments must lie in \\[0, 2\\)"):
        emb(torch.tensor([[3, 4]]), torch.tensor([[0, 2]]))
    with pytest.raises(ValueError, match="must be positive"):
        BERTEmbedding(10, 0)


def _layer_grads(ref_layer: nn.TransformerEncoderLayer) -> dict[str, torch.Tensor]:
    """nn.TransformerEncoderLayer's parameter grads under EncoderLayer's names."""
    sa = ref_layer.self_attn
    grads = {}
    for name, w, b in zip(
        ("q_proj", "k_proj", "v_proj"), sa.in_proj_weight.grad.chunk(3), sa.in_proj_bias.grad.chunk(3)
    ):
        grads[f"self_attn.{name}.weight"], grads[f"self_attn.{name}.bias"] = w, b
    pairs = {"self_attn.out_proj": sa.out_proj, "ffn.linear1": ref_layer.linear1, "ffn.linear2": ref_layer.linear2}
    pairs |= {"norm1": ref_layer.norm1, "norm2": ref_layer.norm2}
    for name, mod in pairs.items():
        grads[f"{name}.weight"], grads[f"{name}.bias"] = mod.weight.grad, mod.bias.grad
    return grads


@pytest.mark.parametrize("seed", range(3))
def test_matches_transformerencoder_gelu(seed: int, device: torch.device) -> None:
    """BERTEncoder's layers = nn.TransformerEncoder(activation='gelu', batch_first=True), float64,
    train mode with dropout 0 (the documented math path), with a key padding mask; fwd + bwd."""
    g = torch.Generator().manual_seed(seed)
    h = int(torch.randint(1, 4, (1,), generator=g))
    d, n_layers = h * int(torch.randint(2, 5, (1,), generator=g)), int(torch.randint(1, 4, (1,), generator=g))
    b, n, vocab = int(torch.randint(2, 4, (1,), generator=g)), int(torch.randint(3, 9, (1,), generator=g)), 20
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(
        d, h, 2 * d, dropout=0.0, activation="gelu", layer_norm_eps=1e-12, batch_first=True, dtype=F64, device=device
    )
    ref = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False).train()
    ours = BERTEncoder(vocab, d, n_layers, h, 2 * d, max_len=16, dropout=0.0, dtype=F64, device=device)
    ours.load_from_torch(ref).train()
    ref_embedding, ref_norm = copy.deepcopy(ours.embedding), copy.deepcopy(ours.embed_norm)
    tokens = torch.randint(0, vocab, (b, n), generator=g).to(device)
    segments = (torch.arange(n)[None] >= torch.randint(1, n, (b, 1), generator=g)).long().to(device)
    lengths = torch.randint(1, n + 1, (b,), generator=g)
    lengths[0] = n
    pad = (torch.arange(n)[None] >= lengths[:, None]).to(device)
    out = ours(tokens, segments, pad)
    out_ref = ref(ref_norm(ref_embedding(tokens, segments)), src_key_padding_mask=pad)
    assert_close(out, out_ref)
    grad = torch.randn(b, n, d, generator=g, dtype=F64).to(device)
    (out * grad).sum().backward()
    (out_ref * grad).sum().backward()
    for ours_layer, ref_layer in zip(ours.layers, ref.layers):
        theirs = _layer_grads(ref_layer)
        mine = dict(ours_layer.named_parameters())
        assert set(mine) == set(theirs)
        for name, p in mine.items():
            assert_close(p.grad, theirs[name], msg=lambda m, k=name: f"{k}: {m}")
    for a, c in ((ours.embedding, ref_embedding), (ours.embed_norm, ref_norm)):
        for (name, p), q in zip(a.named_parameters(), c.parameters()):
            assert_close(p.grad, q.grad, msg=lambda m, k=name: f"{k}: {m}")


def test_load_from_torch_rejects_other_layouts() -> None:
    ours = BERTEncoder(10, 8, 2, 2, 16, max_len=8)
    relu = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2, enable_nested_tensor=False)
    with pytest.raises(ValueError, match="activation='gelu'"):
        ours.load_from_torch(relu)
    gelu = nn.TransformerEncoderLayer(8, 2, 16, activation="gelu", batch_first=True)
    with pytest.raises(ValueError, match="need 2 layers and no final norm"):
        ours.load_from_torch(nn.TransformerEncoder(gelu, 3, enable_nested_tensor=False))
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        BERTEncoder(10, 8, 0, 2, 16)


# ---------------------------------------------------------------- masked language model (11.05)


@pytest.mark.parametrize("p", [0.15, 0.4])
def test_mask_tokens_rates_within_binomial_intervals(p: float, device: torch.device) -> None:
    vocab_size, mask_id, special = 50, 3, [0, 1, 2, 3]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (400, 128), generator=g).to(device)
    inputs, labels = mask_tokens(ids, vocab_size, mask_id, special, p=p, generator=g)
    is_special = torch.isin(ids, torch.tensor(special, device=device))
    selected = labels != -100
    # 1. special tokens are never selected; every other token with probability p
    assert not selected[is_special].any()
    assert torch.equal(inputs[is_special], ids[is_special])
    n_normal, n_sel = int((~is_special).sum()), int(selected.sum())
    assert _within(n_sel, n_normal, p)
    # 2. labels hold the original token at selected positions; unselected positions are untouched
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected])
    # 3. of the selected: 80 % [MASK], 10 % a random non-special token, 10 % unchanged
    n_cand = vocab_size - len(special)
    masked = inputs[selected] == mask_id
    unchanged = inputs[selected] == ids[selected]
    replaced = ~masked & ~unchanged
    assert _within(int(masked.sum()), n_sel, 0.8)
    assert _within(int(replaced.sum()), n_sel, 0.1 * (1 - 1 / n_cand))  # a random draw can hit the original
    assert _within(int(unchanged.sum()), n_sel, 0.1 + 0.1 / n_cand)
    assert not torch.isin(inputs[selected][replaced], torch.tensor(special, device=device)).any()
    # 4. reproducible with the same seed
    again = mask_tokens(ids, vocab_size, mask_id, special, p=p, generator=torch.Generator().manual_seed(0))
    first = mask_tokens(ids, vocab_size, mask_id, special, p=p, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, c) for a, c in zip(again, first))


def test_mask_tokens_rejects_bad_input() -> None:
    ids = torch.tensor([[5, 6, 7]])
    for p in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="p must be in \\(0, 1\\)"):
            mask_tokens(ids, 10, 3, [0], p=p)
    with pytest.raises(ValueError, match="mask_id=10 must lie in"):
        mask_tokens(ids, 10, 10, [0])
    with pytest.raises(ValueError, match="ids must lie in"):
        mask_tokens(torch.tensor([[5, 12]]), 10, 3, [0])
    with pytest.raises(ValueError, match="ids must be int64"):
        mask_tokens(ids.float(), 10, 3, [0])
    with pytest.raises(ValueError, match="special_ids must lie in"):
        mask_tokens(ids, 10, 3, [11])
    with pytest.raises(ValueError, match="every id is special"):
        mask_tokens(torch.tensor([[0, 1]]), 2, 1, [0])


@pytest.mark.parametrize("seed", range(3))
def test_mlm_loss_matches_cross_entropy_ignore_index(seed: int, device: torch.device) -> None:
    g = torch.Generator().manual_seed(seed)
    b, n, v = 3, int(torch.randint(2, 10, (1,), generator=g)), 11
    logits = torch.randn(b, n, v, generator=g, dtype=F64).to(device).requires_grad_()
    ids = torch.randint(5, v, (b, n), generator=g).to(device)
    _, labels = mask_tokens(ids, v, 4, [0, 1, 2, 3, 4], p=0.5, generator=g)
    labels[0, 0] = ids[0, 0]  # at least one selected position
    ours = mlm_loss(logits, labels)
    (g1,) = torch.autograd.grad(ours, logits)
    ref = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    (g2,) = torch.autograd.grad(ref, logits)
    assert_close(ours, ref)
    assert_close(g1, g2)
    with pytest.raises(ValueError, match="no position is selected"):
        mlm_loss(logits, torch.full_like(labels, -100))
    with pytest.raises(ValueError, match="do not match"):
        mlm_loss(logits, labels[:, :1])


def test_maskml_head_shape() -> None:
    head = MaskLM(30, 8)
    assert head(torch.randn(2, 5, 8)).shape == (2, 5, 30)


# ---------------------------------------------------------------- next-sentence prediction (11.06)


def test_nsp_pairs_balance_segments_and_sources() -> None:
    paragraphs = _toy_paragraphs(300, 5, seed=0)
    pairs = make_nsp_pairs(paragraphs, torch.Generator().manual_seed(0))
    assert len(pairs) == 300 * 4  # one example per pair of consecutive sentences
    labels = [nxt for *_, nxt in pairs]
    assert _within(sum(labels), len(labels), 0.5)
    where = {tuple(s): i for i, par in enumerate(paragraphs) for s in par}
    for k, (tokens, segments, is_next) in enumerate(pairs):
        par, j = divmod(k, 4)
        first_sep = tokens.index(SEP)
        a, b = tokens[1:first_sep], tokens[first_sep + 1 : -1]
        assert tokens[0] == CLS and tokens[-1] == SEP and a == paragraphs[par][j]
        assert segments == [0] * (first_sep + 1) + [1] * (len(tokens) - first_sep - 1)
        if is_next:
            assert b == paragraphs[par][j + 1]
        else:
            assert where[tuple(b)] != par  # a sentence from another paragraph
    again = make_nsp_pairs(paragraphs, torch.Generator().manual_seed(0))
    assert again == pairs


def test_nsp_pairs_are_truncated_to_max_len() -> None:
    paragraphs = [[list("abcdefgh"), list("ijk")], [list("lmnopqrstu"), list("vw")]]
    for tokens, segments, _ in make_nsp_pairs(paragraphs, torch.Generator().manual_seed(1), max_len=9):
        assert len(tokens) == len(segments) <= 9
        assert tokens.count(SEP) == 2


def test_nsp_pairs_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2 paragraphs"):
        make_nsp_pairs([])
    with pytest.raises(ValueError, match="at least 2 paragraphs"):
        make_nsp_pairs([[["a"], ["b"]]])
    with pytest.raises(ValueError, match="no paragraph has two consecutive"):
        make_nsp_pairs([[["a"]], [["b"]]])
    with pytest.raises(ValueError, match="max_len must be >= 5"):
        make_nsp_pairs([[["a"], ["b"]], [["c"]]], max_len=4)
    with pytest.raises(ValueError, match="pairs must not be empty"):
        encode_pairs([], bert_vocab([[["a"]]]))


def test_nsp_head_shapes_and_reads_only_cls() -> None:
    torch.manual_seed(0)
    head = NextSentencePred(8)
    h = torch.randn(4, 6, 8)
    logits = head(h)
    assert logits.shape == (4, 2)
    other = h.clone()
    other[:, 1:] = torch.randn(4, 5, 8)  # change everything but [CLS]
    assert torch.equal(head(other), logits)
    assert_close(logits, head.output(torch.tanh(head.pooler(h[:, 0]))))


def test_encode_pairs_and_model_shapes() -> None:
    paragraphs = _toy_paragraphs(6, 3, seed=1)
    vocab = bert_vocab(paragraphs)
    assert vocab.idx_to_token[: 1 + len(SPECIAL_TOKENS)] == ["<unk>", *SPECIAL_TOKENS]
    pairs = make_nsp_pairs(paragraphs, torch.Generator().manual_seed(0))
    tokens, segments, pad, is_next = encode_pairs(pairs, vocab)
    assert tokens.shape == segments.shape == pad.shape and is_next.shape == (len(pairs),)
    for r, (toks, segs, nxt) in enumerate(pairs):
        assert vocab.decode(tokens[r, : len(toks)], sep=" ").split() == toks
        assert segments[r, : len(segs)].tolist() == segs and bool(is_next[r]) == nxt
        assert pad[r].tolist() == [False] * len(toks) + [True] * (tokens.size(1) - len(toks))
        assert (tokens[r][pad[r]] == vocab.token_to_idx[PAD]).all()
    torch.manual_seed(0)
    model = BERTModel(len(vocab), 16, 1, 2, 32, max_len=tokens.size(1)).eval()
    h, mlm, nsp = model(tokens, segments, pad)
    assert h.shape == (*tokens.shape, 16) and mlm.shape == (*tokens.shape, len(vocab)) and nsp.shape == (len(pairs), 2)


def test_pretraining_lowers_the_mlm_loss() -> None:
    """A tiny pretraining run on the toy corpus: the MLM loss falls well below its start
    (80 steps; over model seeds 0-3 it falls by 0.83-1.19 nats, from about log |V| = 3.8)."""
    paragraphs = _toy_paragraphs(60, 4, seed=2)
    vocab = bert_vocab(paragraphs)
    data = encode_pairs(make_nsp_pairs(paragraphs, torch.Generator().manual_seed(0)), vocab)
    torch.manual_seed(0)
    model = BERTModel(len(vocab), 32, 2, 2, 64, max_len=data[0].size(1), dropout=0.0)
    losses = pretrain_bert(model, data, vocab, 80, batch_size=32, lr=1e-2)
    start, end = losses[0][0], sum(mlm for mlm, _ in losses[-10:]) / 10
    assert end < start - 0.7, (start, end)
    assert not model.training
    with pytest.raises(ValueError, match="steps and batch_size must be >= 1"):
        pretrain_bert(model, data, vocab, 0)


def test_timemachine_paragraphs() -> None:
    paragraphs = timemachine_paragraphs()
    assert len(paragraphs) > 200 and all(len(p) >= 2 and all(s for s in p) for p in paragraphs)
    assert any(p[0][:6] == ["the", "time", "traveller", "for", "so", "it"] for p in paragraphs)
    assert all(w == w.lower() and w.isalpha() for p in paragraphs for s in p for w in s)
    assert MASK not in bert_vocab(paragraphs).counts


def test_mlm_only_pretraining_leaves_the_nsp_head_untouched() -> None:
    """Erratum 11.06 (RoBERTa drops NSP): with nsp_weight=0 the NSP head gets no gradient at all."""
    paragraphs = _toy_paragraphs(8, 3, seed=3)
    vocab = bert_vocab(paragraphs)
    data = encode_pairs(make_nsp_pairs(paragraphs, torch.Generator().manual_seed(0)), vocab)
    torch.manual_seed(0)
    model = BERTModel(len(vocab), 16, 1, 2, 32, max_len=data[0].size(1), dropout=0.0)
    nsp_before = {k: v.clone() for k, v in model.nsp.state_dict().items()}
    enc_before = model.encoder.embedding.token.weight.detach().clone()
    pretrain_bert(model, data, vocab, 2, batch_size=8, nsp_weight=0.0)
    assert all(torch.equal(model.nsp.state_dict()[k], v) for k, v in nsp_before.items())
    assert not torch.equal(model.encoder.embedding.token.weight, enc_before)  # the encoder did train
    with pytest.raises(ValueError, match="nsp_weight must be >= 0"):
        pretrain_bert(model, data, vocab, 1, nsp_weight=-1.0)


def test_nsp_negatives_are_given_away_by_word_overlap() -> None:
    """Why NSP is easy (11.06): a random sentence from another paragraph shares fewer words with A,
    so a word-overlap threshold alone beats chance on The Time Machine."""
    pairs = make_nsp_pairs(timemachine_paragraphs(), torch.Generator().manual_seed(0))
    overlap, labels = [], []
    for tokens, segments, is_next in pairs:
        a = {t for t, s in zip(tokens, segments) if s == 0} - {CLS, SEP}
        b = {t for t, s in zip(tokens, segments) if s == 1} - {SEP}
        overlap.append(len(a & b) / len(a | b))
        labels.append(is_next)
    overlap_t, labels_t = torch.tensor(overlap), torch.tensor(labels)
    accuracy = ((overlap_t > overlap_t.median()) == labels_t).double().mean().item()
    assert accuracy > 0.55, accuracy  # seed 0: 0.576 on 1,650 pairs (chance 0.5, sd 0.012)

"""RMT core: reference equivalence, incremental decoding, gradient flow, cache, determinism."""

import collections
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rate.core import attention, streaming
from rate.core.attention import sinusoid_table
from rate.core.masks import apply_segment_padding, mask_to_bias, rmt_segment_mask
from rate.core.streaming import StreamingDecoder
from rate.core.rmt import RecurrentMemoryTransformer, RMTConfig

D = 32


def make(**kw):
    base = dict(d_model=D, n_layers=2, n_heads=2, d_head=16, d_inner=64)
    base.update(kw)
    torch.manual_seed(0)
    model = RecurrentMemoryTransformer(RMTConfig(**base))
    # Non-zero u/v biases so the test exercises them.
    with torch.no_grad():
        for layer in model.layers:
            layer.attn.u_bias.normal_()
            layer.attn.v_bias.normal_()
    return model.eval()


def reference_decoder(model, x):
    """Plain causal Transformer-XL decoder written out with loops over query/key pairs."""
    b, t, _ = x.shape
    h = x
    for layer in model.layers:
        attn = layer.attn
        nh, dh = attn.n_heads, attn.d_head
        inp = layer.norm_attn(h) if layer.pre_ln else h
        q, k, v = attn.qkv(inp).view(b, t, 3, nh, dh).unbind(2)  # (B, T, H, dh)
        out = torch.zeros(b, t, nh, dh)
        for i in range(t):
            scores = torch.full((b, nh, t), -math.inf)
            for j in range(i + 1):
                r = attn.r_proj(sinusoid_table(torch.tensor([i - j]), D)).view(nh, dh)
                content = ((q[:, i] + attn.u_bias) * k[:, j]).sum(-1)
                position = ((q[:, i] + attn.v_bias) * r).sum(-1)
                scores[:, :, j] = (content + position) / math.sqrt(dh)
            p = scores.softmax(-1)  # (B, H, T)
            out[:, i] = torch.einsum("bhj,bjhd->bhd", p, v)
        a = attn.out(out.reshape(b, t, nh * dh))
        if layer.pre_ln:
            h = h + a
            h = h + layer.ffn(layer.norm_ffn(h))
        else:
            h = layer.norm_attn(h + a)
            h = layer.norm_ffn(h + layer.ffn(h))
    return model.final_norm(h)


@pytest.mark.parametrize("pre_ln", [True, False])
def test_one_segment_without_memory_equals_plain_decoder(pre_ln, scores_form):
    model = make(pre_ln=pre_ln)
    x = torch.randn(2, 7, D)
    h, state = model(x, segment_len=7)
    torch.testing.assert_close(h, reference_decoder(model, x), atol=1e-5, rtol=1e-5)
    assert state.memory is None and state.cache == []


CONFIGS = {
    "rmt": dict(num_mem_tokens=3),
    "rmt+xl": dict(num_mem_tokens=3, mem_len=5),
    "rmt+xl, memory sees cache": dict(num_mem_tokens=2, mem_len=4, memory_sees_cache=True),
    "mrv": dict(num_mem_tokens=3, memory_update="mrv", mrv_heads=2),
    "xl only": dict(mem_len=6),
    "prefix, post-LN": dict(num_mem_tokens=2, memory_layout="prefix", pre_ln=False),
    "no ffn": dict(num_mem_tokens=2, use_ffn=False),
}


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("page_slots, read_align", [(None, 1), (None, 16), (3, 1)])
def test_incremental_decoding_equals_full_forward(name, page_slots, read_align, scores_form, monkeypatch):
    """Token-by-token decoding (a chunk, then single tokens) gives the full forward's outputs, and
    closing the segments gives its memory and Transformer-XL cache; with one flat key/value page
    (its filled slots read exactly, or rounded up to 16: the whole buffer at these sizes) and with
    pages of at least 3 slots (the cache, the read memory and the chunk span pages)."""
    monkeypatch.setattr(streaming, "READ_ALIGN", read_align)
    model = make(**CONFIGS[name])
    x = torch.randn(3, 15, D)  # three segments of 5
    full_h, full_state = model(x, segment_len=5)
    decoding = StreamingDecoder(model, segment_tokens=5, page_slots=page_slots)
    assert (decoding.pages > 1) == (page_slots is not None)
    state, outs = decoding.initial(3), []
    for seg in x.split(5, dim=1):
        state = decoding.close_full(state)
        h, state = decoding.step(state, seg[:, :2])
        outs.append(h)
        for t in range(2, seg.shape[1]):
            h, state = decoding.step(state, seg[:, t : t + 1])
            outs.append(h)
    torch.testing.assert_close(torch.cat(outs, 1), full_h, atol=1e-5, rtol=1e-5)
    state = decoding.close_full(state)
    # (first that the full forward carries what the config asks for: the checks below would skip it)
    assert (full_state.memory is None) == (CONFIGS[name].get("num_mem_tokens", 0) == 0)
    assert len(full_state.cache) == (2 if CONFIGS[name].get("mem_len", 0) else 0)
    if full_state.memory is not None:
        torch.testing.assert_close(state.memory, full_state.memory, atol=1e-5, rtol=1e-5)
    for layer, expected in enumerate(full_state.cache):  # the valid (right-aligned) cache slots
        assert (state.cache_valid.sum(1) == expected.shape[1]).all()  # (every row)
        torch.testing.assert_close(state.cache[layer][:, -expected.shape[1] :], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("phases", ["in step", "per row"])
def test_decoding_the_last_rows_alone_gives_those_rows_and_the_same_state(name, phases):
    """step(x, outputs=k) returns the last k rows of step(x) (the last layer attends for those
    alone; all of x when it has fewer) and leaves the same state: the later steps' outputs, the
    memory and the cache agree.  Rows in step (a window of the distance table) and rows at
    different phases (a gathered index: row 0 restarted mid-segment)."""
    model = make(**CONFIGS[name])
    x = torch.randn(3, 12, D, generator=torch.Generator().manual_seed(3))
    decoding = StreamingDecoder(model, segment_tokens=4)
    chunks = [2, 2, 3, 1, 3, 1]  # segments of 4 (in step); row 0 restarts before the fourth chunk
    results = {}
    for outputs in (None, 1, 2):
        state, outs, t = decoding.initial(3), [], 0
        for i, n in enumerate(chunks):
            if phases == "per row" and i == 3:
                state = decoding.restart(state, torch.tensor([True, False, False]))
            h, state = decoding.step(decoding.close_full(state), x[:, t : t + n], outputs=outputs)
            assert h.shape[1] == min(outputs or n, n)
            outs.append(h)
            t += n
        results[outputs] = (outs, decoding.close_full(state))
    outs0, s0 = results[None]
    for k in (1, 2):
        outs, state = results[k]
        for h, h0 in zip(outs, outs0):
            torch.testing.assert_close(h, h0[:, -k:], atol=1e-6, rtol=1e-6)
        for got, expected in ((state.memory, s0.memory), (state.cache, s0.cache)):
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["rmt", "rmt+xl", "prefix, post-LN"])
def test_stepping_across_a_boundary_for_the_last_rows_alone_gives_those_rows(name):
    """step_across(outputs=k) returns the last k rows of step_across() (all n first tokens when
    k > n) and the same state."""
    model = make(**CONFIGS[name])
    x = torch.randn(2, 9, D, generator=torch.Generator().manual_seed(4))
    decoding = StreamingDecoder(model, segment_tokens=4, write_slots=True)
    results = {}
    for outputs in (None, 1, 5):
        state = decoding.initial(2)
        _, state = decoding.step(state, x[:, :3])
        h, state = decoding.step_across(state, x[:, 3:4], x[:, 4:6], outputs=outputs)
        after, _ = decoding.step(state, x[:, 6:8])
        results[outputs] = (h, after, state.memory)
    h0, after0, memory0 = results[None]
    assert results[5][0].shape == h0.shape == (2, 2, D) and results[1][0].shape == (2, 1, D)
    for h, after, memory in (results[1], results[5]):
        torch.testing.assert_close(h, h0[:, -h.shape[1] :], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(after, after0, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(memory, memory0, atol=1e-6, rtol=1e-6)


def test_both_forms_of_the_positional_features_agree_at_long_distances():
    """The distance table (bias form, streaming decode) and the factored form's features (large
    training calls) are the same sinusoids to float32 rounding at thousands of steps (the table's
    angles were float32 and 2e-4 off there)."""
    from rate.core.attention import RelativePositions

    d_model, far = 128, 6000
    table = sinusoid_table(torch.arange(-far, far + 1), d_model)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model))
    angles = torch.arange(-far, far + 1, dtype=torch.float64)[:, None] * inv_freq
    exact = torch.cat([angles.sin(), angles.cos()], -1)
    assert table.dtype == torch.float32 and (table.double() - exact).abs().max() < 1e-6
    # The factored form's rotation of the query at position 5999 is e^{i 5999 w}: the table's
    # distance-5999 row (to key 0) as (imaginary, real) parts.
    rotation, key_features = RelativePositions(far - 1, 1, far, d_model).factors(d_model)
    torch.testing.assert_close(torch.cat([rotation[0].imag, rotation[0].real]), table[far + far - 1], atol=2e-6, rtol=0)
    assert key_features.shape == (far, d_model)


def test_full_forward_attention_compiles_into_one_graph():
    """The full forward's positional window compiles without a graph break (fullgraph) and gives
    the eager outputs and gradients (eagerly it reads the tensor's storage offset, which Dynamo
    cannot trace)."""
    model = make(num_mem_tokens=2)
    attn = model.layers[0].attn
    q_len = 9
    positions = attention.RelativePositions(0, q_len, q_len, D)
    bias = torch.zeros(1, 1, q_len, q_len).masked_fill(torch.ones(q_len, q_len, dtype=torch.bool).triu(1), float("-inf"))
    x = torch.randn(2, q_len, D, generator=torch.Generator().manual_seed(5))
    compiled = torch.compile(lambda x: attn(x, positions, bias)[0], backend="aot_eager", fullgraph=True)
    outs = {}
    for name, fn in (("eager", lambda x: attn(x, positions, bias)[0]), ("compiled", compiled)):
        xi = x.clone().requires_grad_()
        out = fn(xi)
        out.square().sum().backward()
        outs[name] = (out.detach(), xi.grad, attn.r_proj.weight.grad.clone())
        attn.zero_grad()
    for a, b in zip(outs["compiled"], outs["eager"]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_outputs_selects_rows_on_the_decode_path_only():
    """The full forward computes every row (its outputs are the segment's hidden states): asking it
    for fewer is refused rather than ignored; so is asking a decoding step for none."""
    model = make()
    with pytest.raises(ValueError, match="decode path"):
        model.layers[0].attn(torch.randn(1, 3, D), attention.RelativePositions(0, 3, 3, D),
                             torch.zeros(1, 1, 3, 3), outputs=1)
    decoding = StreamingDecoder(model, segment_tokens=4)
    with pytest.raises(ValueError, match="at least one row"):
        decoding.step(decoding.initial(1), torch.randn(1, 2, D), outputs=0)


@pytest.mark.parametrize("name", CONFIGS)
def test_factored_scores_give_the_gathered_outputs_and_gradients(name, force_scores):
    """Training mode, three segments with padding in the last: outputs, the carried memory and
    cache, and the gradients of every parameter and of the input agree between the bias form and
    the explicit path's two forms (window, factored), also with q, k and v projected again in
    backward (checkpoint_attention, also inside checkpoint_segments)."""
    results = {}
    others = ("window", "window, checkpoint_attention", "factored", "factored, checkpoint_attention",
              "factored, both checkpoints")
    for form in ("gathered", *others):
        calls = force_scores(form.split(",")[0])
        model = make(**CONFIGS[name], checkpoint_attention="checkpoint" in form,
                     checkpoint_segments="both" in form).train()
        x = torch.randn(3, 15, D, generator=torch.Generator().manual_seed(1)).requires_grad_()
        valid = torch.ones(3, 15, dtype=torch.bool)
        valid[1, 12:] = False
        h, state = model(x, segment_len=5, valid=valid)
        probe = torch.randn(D, generator=torch.Generator().manual_seed(2))
        ((h[valid] * probe).sum() + ((state.memory * probe).sum() if state.memory is not None else 0)).backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results[form] = (h.detach(), state, grads, x.grad)
        assert (calls[0] > 0) == (form != "gathered")
    h0, s0, g0, x0 = results["gathered"]
    for form in others:
        h1, s1, g1, x1 = results[form]
        torch.testing.assert_close(h1, h0, atol=1e-5, rtol=1e-5)
        if s0.memory is not None:
            torch.testing.assert_close(s1.memory, s0.memory, atol=1e-5, rtol=1e-5)
        assert len(s1.cache) == len(s0.cache)
        for a, b in zip(s1.cache, s0.cache):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert g1.keys() == g0.keys() and any("r_proj" in n for n in g0)
        for n in g0:
            torch.testing.assert_close(g1[n], g0[n], atol=1e-4, rtol=1e-4, msg=f"{form}: {n}")
        torch.testing.assert_close(x1, x0, atol=1e-5, rtol=1e-5)
    # The same operations on the same operands: checkpoint_attention changes nothing but what is kept.
    for form in ("window", "factored"):
        (h1, _, g1, x1), (h2, _, g2, x2) = results[form], results[f"{form}, checkpoint_attention"]
        torch.testing.assert_close(h2, h1, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(x2, x1, atol=1e-6, rtol=1e-6)
        for n in g1:
            torch.testing.assert_close(g2[n], g1[n], atol=1e-6, rtol=1e-6, msg=n)


def _kept_for_backward(model, x, segment_len):
    """What autograd keeps from a training forward of ``model``: the output and [(tensor, bytes of
    its storage)] (a view keeps its whole storage alive)."""
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: kept.append((t, t.untyped_storage().nbytes())) or t, lambda t: t):
        out = model(x, segment_len=segment_len)[0]
    return out, kept


@pytest.mark.parametrize("form", ["window", "factored"])
@pytest.mark.parametrize("checkpoint_attention", [False, True])
def test_cpu_training_keeps_the_softmax_and_without_checkpoint_attention_q_k_v(checkpoint_attention, form,
                                                                              force_scores):
    """What autograd keeps from an explicit-path CPU training forward: the softmax of the scores
    in pieces that leave out the masked ends of causal rows; q + u, k and v, or with
    checkpoint_attention none of them (projected again in backward); no widened (d_head +
    d_model) tensor, no bias and no scores against all the distances; and the output projection
    keeps the very tensor the attention keeps."""
    force_scores(form)
    d_head, b, seg, layers, segments = 6, 8, 12, 2, 2  # (no piece of the scores has 1 or d_head keys)
    model = make(d_head=d_head, num_mem_tokens=2, checkpoint_attention=checkpoint_attention).train()
    out, kept = _kept_for_backward(model, torch.randn(b, segments * seg, D, requires_grad=True), seg)
    rows = seg + 2 * 2  # read block, segment, write block
    scores = [t for t, _ in kept if t.dim() == 3 and t.shape[1] <= rows and t.shape[2] <= rows and t.shape[2] not in (1, d_head)]
    full = layers * segments * b * 2 * rows * rows  # (B, H, Q, K) per layer and segment
    assert full / 2 <= sum(t.numel() for t in scores) < full  # kept, less the masked ends of rows
    assert not any(t.shape[-1] == d_head + D for t, _ in kept)
    assert not any(t.dim() == 4 and t.shape[:2] == (b, 2) for t, _ in kept)  # no (B, H, Q, K) bias
    assert not any(t.shape[0] in (b, b * 2) and t.shape[-1] == 2 * rows - 1 for t, _ in kept)  # all distances
    operands = [t for t, _ in kept if t.shape == (b * 2, rows, d_head)]
    assert len(operands) == (0 if checkpoint_attention else 3 * layers * segments)
    narrow = [t for t, _ in kept
              if t.shape == (b, rows, 2, d_head) and t.stride() == (rows * 2 * d_head, 2 * d_head, d_head, 1)]
    assert len(narrow) == layers * segments  # the output, in the (B, Q, H, dh) layout
    shared = {t.untyped_storage().data_ptr() for t, _ in kept if t.shape == (b * rows, 2 * d_head)
              or t.shape == (b, rows, 2 * d_head)}
    assert {t.untyped_storage().data_ptr() for t in narrow} <= shared  # the projection's input
    out.sum().backward()  # and backward runs from what was kept


@pytest.mark.parametrize("form", ["window", "factored"])
def test_explicit_attention_steps_aside_under_autocast_and_outside_training(form, force_scores):
    """Under bf16 autocast, and outside training, the other path runs (the explicit path is
    fp32 CPU training's), and attention dropout, which that path lacks, is refused with
    checkpoint_attention when the model is configured."""
    force_scores(form)
    model = make(num_mem_tokens=2, checkpoint_attention=True).train()
    calls = []
    original = attention._ExplicitSoftmaxAttention.apply
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attention._ExplicitSoftmaxAttention, "apply", lambda *a: calls.append(1) or original(*a))
        model(torch.randn(2, 12, D), segment_len=6)
        assert calls
        calls.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(torch.randn(2, 12, D), segment_len=6)[0]
        assert not calls and torch.isfinite(out).all()
        model.eval()(torch.randn(2, 12, D, requires_grad=True), segment_len=6)  # not training: not taken
        assert not calls
    with pytest.raises(ValueError, match="checkpoint_attention needs attn_dropout 0"):
        RMTConfig(d_model=D, checkpoint_attention=True, attn_dropout=0.1)


def test_the_window_path_takes_calls_of_explicit_min_scores_and_more(monkeypatch):
    """Below the factored threshold, fp32 CPU training takes the explicit path with the window
    form for calls of at least EXPLICIT_MIN_SCORES (B H Q K) scores, the bias path for smaller
    ones."""
    model = make(num_mem_tokens=2).train()  # 2 heads; one segment of 8: Q = K = 2 + 8 + 2
    taken = []
    original = attention.RelativeMultiHeadAttention._explicit_attention
    monkeypatch.setattr(attention.RelativeMultiHeadAttention, "_explicit_attention",
                        lambda self, *a: taken.append(a[-1]) or original(self, *a))
    scores = 3 * 2 * 12 * 12
    for threshold, expected in ((scores, ["window"] * 2), (scores + 1, [])):
        monkeypatch.setattr(attention, "EXPLICIT_MIN_SCORES", threshold)
        taken.clear()
        model(torch.randn(3, 8, D), segment_len=8)
        assert taken == expected  # (one call per layer)


@pytest.mark.parametrize("form", ["window", "factored"])
@pytest.mark.parametrize("checkpoint_attention", [False, True])
def test_explicit_attention_backs_a_retained_graph_twice_alike(checkpoint_attention, form, force_scores):
    """A second backward pass through a retained graph gives the first one's gradients (the kept
    softmax is read, not overwritten, by the first)."""
    calls = force_scores(form)
    model = make(num_mem_tokens=2, checkpoint_attention=checkpoint_attention).train()
    loss = model(torch.randn(2, 12, D), segment_len=6)[0].square().sum()
    assert calls[0] > 0
    loss.backward(retain_graph=True)
    first = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    loss.backward()
    for a, b in zip(first, [p.grad for p in model.parameters() if p.grad is not None]):
        torch.testing.assert_close(b, a, atol=0, rtol=0)


def test_explicit_attention_returns_the_keys_and_values_with_their_gradients(force_scores):
    """The explicit path's keys and values (a cache's before its own) are the gathered form's, and
    gradients through the output, the keys and the values reach the input, the cache and every
    parameter alike."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 6, D, generator=gen)
    past = [torch.randn(3, 2, 4, 8, generator=gen) for _ in range(2)]
    probes = [torch.randn(3, 2, 10, 8, generator=gen) for _ in range(2)]
    mask = mask_to_bias(rmt_segment_mask(4, 2, 2))  # queries [read 2 | segment 2 | write 2] after a cache of 4
    results = {}
    for form in ("gathered", "window", "factored"):
        calls = force_scores(form)
        torch.manual_seed(0)
        attn = attention.RelativeMultiHeadAttention(D, 2, 8).train()
        with torch.no_grad():
            attn.u_bias.normal_(), attn.v_bias.normal_()
        inputs = [t.clone().requires_grad_() for t in (x, *past)]
        out, (k, v) = attn(inputs[0], attention.RelativePositions(4, 6, 10, D), mask, tuple(inputs[1:]))
        (out.square().sum() + (k * probes[0]).sum() + (v * probes[1]).sum()).backward()
        assert (calls[0] > 0) == (form != "gathered")
        results[form] = [out, k, v, *(t.grad for t in inputs), *(p.grad for p in attn.parameters())]
    for form in ("window", "factored"):
        for a, b in zip(results[form], results["gathered"], strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", ["window", "factored"])
def test_explicit_attention_steps_aside_for_a_hooked_or_wrapped_projection(form, force_scores):
    """The explicit path applies the qkv weight itself; a forward hook on the projection (pruning
    works through one) or a wrapper in its place would be bypassed, so the other path runs then."""
    force_scores(form)
    model = make(num_mem_tokens=2).train()
    fired = []
    model.layers[0].attn.qkv.register_forward_hook(lambda *a: fired.append(1))
    explicit = []
    original = attention._ExplicitSoftmaxAttention.apply
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attention._ExplicitSoftmaxAttention, "apply", lambda *a: explicit.append(1) or original(*a))
        model(torch.randn(2, 12, D), segment_len=6)[0].sum().backward()
    assert len(fired) == 2  # segments: the hooked layer projects through its module
    assert len(explicit) == 2  # the other layer, per segment, still takes the explicit path


def test_score_parts_cover_every_allowed_score_once():
    """The pieces of the explicit path cover each (batch row, query row) once, and each query row
    over at least every key it may see (a padded batch's mask included)."""
    allowed = rmt_segment_mask(0, 2, 9)
    valid = torch.ones(5, 9, dtype=torch.bool)
    valid[3, 6:] = False
    for mask in (mask_to_bias(allowed), mask_to_bias(apply_segment_padding(allowed, valid, 0, 2))):
        b = mask.shape[0] if mask.shape[0] > 1 else 5
        seen = torch.zeros(b, allowed.shape[0], dtype=torch.int)
        for element_size in (4, 1 << 20):  # many batch rows per piece, and one
            seen.zero_()
            for (lo, hi), (r0, r1, keys) in attention._score_parts(mask, b, 2, element_size):
                seen[lo:hi, r0:r1] += 1
                assert not (mask[..., r0:r1, keys:] == 0).any()  # nothing allowed beyond the piece's keys
            assert (seen == 1).all()


def test_factored_scores_keep_long_positions_exact(force_scores):
    """Positions in the thousands (a long cache), where each form computes its sines from
    thousands of radians in its own way (the window form as training's explicit path reads it,
    from the far end of a long table): they still agree to float32 rounding."""
    outs = []
    for form in ("gathered", "window", "factored"):
        calls = force_scores(form)
        model = make(mem_len=3000, num_mem_tokens=2).train(form == "window")  # (fp32 CPU training's path)
        x = torch.randn(1, 3010, D, generator=torch.Generator().manual_seed(3))
        outs.append(model(x, segment_len=1500)[0][:, -10:])
        assert (calls[0] > 0) == (form != "gathered")  # (each form really ran)
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[2], outs[0], atol=1e-5, rtol=1e-5)


def test_page_size_must_be_positive_and_write_after_the_frame_needs_one_page():
    with pytest.raises(ValueError, match="page_slots"):
        StreamingDecoder(make(num_mem_tokens=2), segment_tokens=4, page_slots=0)
    with pytest.raises(ValueError, match="one flat page"):
        StreamingDecoder(make(num_mem_tokens=2), segment_tokens=4, page_slots=4, write_slots=False)


@pytest.mark.parametrize("write_slots", [True, False])
def test_write_block_in_its_own_slots_or_after_the_frame_gives_the_same_memory(write_slots):
    """The two ways of running the write block (exported graphs use the second) agree with the
    full forward's memory after two segments."""
    model = make(num_mem_tokens=3, mem_len=4)
    x = torch.randn(2, 10, D)
    _, full_state = model(x, segment_len=5)
    decoding = StreamingDecoder(model, segment_tokens=5, page_slots=None, write_slots=write_slots)
    assert decoding.slots == 4 + 3 + 5 + (3 if write_slots else 0)
    state = decoding.initial(2)
    for seg in x.split(5, dim=1):
        state = decoding.close_full(state)
        _, state = decoding.step(state, seg)
    state = decoding.close_full(state)
    torch.testing.assert_close(state.memory, full_state.memory, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["rmt", "rmt+xl", "mrv"])
@pytest.mark.parametrize("n_first", [1, 3, 5])
def test_crossing_a_boundary_in_two_passes_equals_the_four_steps(name, n_first):
    """step_across(last, first) = step(last), close_full, step(first): the same outputs for the
    first tokens, the same memory, and (where the segment has room) the same outputs for the next
    tokens, which read every buffer and the cache; more first tokens than a segment holds are
    refused (they would run into the write block's slots)."""
    model = make(**CONFIGS[name])
    x = torch.randn(2, 5 + n_first + 2, D)
    decoding = StreamingDecoder(model, segment_tokens=5)

    def four_tokens_in():  # (a state is stepped once: its buffers are written in place)
        return decoding.step(decoding.close_full(decoding.initial(2)), x[:, :4])[1]

    h_four, four = decoding.step(decoding.close_full(decoding.step(four_tokens_in(), x[:, 4:5])[1]),
                                 x[:, 5 : 5 + n_first])
    h_two, two = decoding.step_across(four_tokens_in(), x[:, 4:5], x[:, 5 : 5 + n_first])
    torch.testing.assert_close(h_two, h_four, atol=1e-5, rtol=1e-5)
    rest = x[:, 5 + n_first :][:, : 5 - n_first]
    if rest.shape[1]:
        torch.testing.assert_close(decoding.step(two, rest)[0], decoding.step(four, rest)[0], atol=1e-5, rtol=1e-5)
    if four.memory is not None:
        torch.testing.assert_close(two.memory, four.memory, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="opens the next segment with 1 to 5 tokens, got 6"):
        decoding.step_across(four_tokens_in(), x[:, 4:5], torch.randn(2, 6, D))


def test_write_block_runs_once_per_segment():
    model = make(num_mem_tokens=2)
    calls = []
    model.memory_update.register_forward_hook(lambda *args: calls.append(1))
    decoding = StreamingDecoder(model, segment_tokens=4)
    state = decoding.initial(2)
    for _ in range(3):  # 12 tokens one at a time: segments close before tokens 5 and 9
        for _ in range(4):
            state = decoding.close_full(state)
            _, state = decoding.step(state, torch.randn(2, 1, D))
    assert len(calls) == 2


def test_segment_tokens_cannot_see_the_write_block_or_the_future():
    model = make(num_mem_tokens=2)
    x = torch.randn(1, 6, D)
    h, _ = model(x, segment_len=6)
    y = x.clone()
    y[:, 4:] += torch.randn(1, 2, D)  # change the future (not a constant: LayerNorm ignores that)
    h2, _ = model(y, segment_len=6)
    torch.testing.assert_close(h[:, :4], h2[:, :4])
    assert not torch.allclose(h[:, 4:], h2[:, 4:])


def test_memory_carries_information_and_prefix_memory_cannot():
    x = torch.randn(1, 8, D)
    y = x.clone()
    y[:, 0] += torch.randn(D)  # change the first segment only
    for layout, should_change in (("read_write", True), ("prefix", False)):
        model = make(num_mem_tokens=2, memory_layout=layout)
        h1, _ = model(x, segment_len=4)
        h2, _ = model(y, segment_len=4)
        assert (not torch.allclose(h1[:, 4:], h2[:, 4:])) == should_change, layout


def test_segmented_model_without_memory_or_cache_forgets_earlier_segments():
    model = make()
    x = torch.randn(1, 8, D)
    y = x.clone()
    y[:, :4] += torch.randn(1, 4, D)
    torch.testing.assert_close(model(x, 4)[0][:, 4:], model(y, 4)[0][:, 4:])


# Losses in these tests weigh the features with a fixed random probe: a plain sum, or a sum of
# squares, of a LayerNorm's output is constant in its input, so its gradients are float noise of
# 1e-4 and smaller that any gradient comparison would pass.


def first_memory_grad(model, n_segments=4, seg=3):
    x = torch.randn(2, n_segments * seg, D, requires_grad=True)
    h, _ = model.train()(x, segment_len=seg)
    (h[:, -seg:] * torch.randn(D)).sum().backward()  # a loss on the last segment only
    return model.memory.weight.grad, x.grad


def test_full_bptt_reaches_first_segment_memory():
    mem_grad, x_grad = first_memory_grad(make(num_mem_tokens=2, bptt_depth=-1))
    # Gradients of order 1 (float noise would be ~1e-7): a real path, not rounding.
    assert mem_grad is not None and mem_grad.abs().sum() > 1e-2
    assert x_grad[:, :3].abs().sum() > 1e-2  # first segment's tokens influence the last loss


def test_bptt_depth_zero_stops_at_the_segment():
    mem_grad, x_grad = first_memory_grad(make(num_mem_tokens=2, bptt_depth=0))
    assert mem_grad is None or mem_grad.abs().sum() == 0
    assert x_grad[:, :9].abs().sum() == 0
    assert x_grad[:, 9:].abs().sum() > 1e-2


@pytest.mark.parametrize("k", [1, 2])
def test_bptt_depth_k_reaches_exactly_k_segments_back(k):
    model = make(num_mem_tokens=2, bptt_depth=k)
    _, x_grad = first_memory_grad(model, n_segments=4, seg=3)
    per_segment = x_grad.abs().sum(dim=(0, 2)).view(4, 3).sum(1)
    assert (per_segment[3 - k :] > 1e-2).all()
    assert (per_segment[: 3 - k] == 0).all()


def test_truncated_bptt_forward_values_equal_full_forward():
    x = torch.randn(2, 12, D)
    full = make(num_mem_tokens=2, bptt_depth=-1)(x, 3)[0]
    trunc = make(num_mem_tokens=2, bptt_depth=1)(x, 3)[0]
    torch.testing.assert_close(full, trunc)


def test_activation_checkpointing_gives_same_gradients():
    x, probe = torch.randn(2, 12, D), torch.randn(D)
    grads = []
    for ckpt in (False, True):
        model = make(num_mem_tokens=2, mem_len=3, checkpoint_segments=ckpt).train()
        (model(x, 4)[0] * probe).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


class _OpCounter(TorchDispatchMode):
    """Counts the aten operators run while it is active (the backward pass's included)."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func] += 1
        return func(*args, **(kwargs or {}))


def test_checkpointing_reruns_the_segment_but_not_its_attention_kernel(monkeypatch):
    """checkpoint_segments keeps the fused attention kernel's outputs (where the kernel runs in
    training: here under bf16 autocast): backward recomputes the segment's projections (more
    matmuls than without checkpointing) but never the attention kernel itself, and the gradients
    (dropout masks replayed) are those of the plain run."""
    monkeypatch.setattr(attention, "FACTORED_MIN_ELEMENTS_PER_CHANNEL", 0)  # the fused kernel at this size
    kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
    x, probe = torch.randn(2, 12, D), torch.randn(D)
    grads, backward_ops = [], []
    for ckpt in (False, True):
        model = make(num_mem_tokens=2, mem_len=3, dropout=0.2, checkpoint_segments=ckpt).train()
        torch.manual_seed(1)
        with _OpCounter() as forward, torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, 4)[0]
        assert forward.counts[kernel] == 2 * 3  # layers x segments: the factored path ran
        with _OpCounter() as backward:
            (out.float() * probe).sum().backward()
        backward_ops.append(backward.counts)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert (grads[1] - grads[0]).norm() < 1e-2 * grads[0].norm()  # (bf16 rounding: 0.2 % when written)
    plain, checkpointed = backward_ops
    assert plain[kernel] == checkpointed[kernel] == 0
    matmuls = (torch.ops.aten.mm.default, torch.ops.aten.bmm.default)
    assert sum(checkpointed[op] for op in matmuls) > sum(plain[op] for op in matmuls)


def test_checkpointing_the_explicit_path_recomputes_it_with_the_same_gradients(force_scores):
    """On fp32 CPU training's explicit path checkpoint_segments keeps none of the attention:
    backward runs the segment's attention again, and the gradients (dropout masks replayed) are
    those of the plain run."""
    force_scores("factored")
    x, probe = torch.randn(2, 12, D), torch.randn(D)
    grads, runs = [], []
    for ckpt in (False, True):
        model = make(num_mem_tokens=2, mem_len=3, dropout=0.2, checkpoint_segments=ckpt).train()
        calls = []
        original = attention._ExplicitSoftmaxAttention.forward
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(attention._ExplicitSoftmaxAttention, "forward",
                       staticmethod(lambda *a: calls.append(1) or original(*a)))
            torch.manual_seed(1)
            (model(x, 4)[0] * probe).sum().backward()
        runs.append(len(calls))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)
    assert runs == [2 * 3, 2 * 2 * 3]  # layers x segments, again in backward with checkpointing


def test_xl_cache_holds_last_mem_len_segment_inputs_detached():
    model = make(num_mem_tokens=2, mem_len=5)
    x = torch.randn(2, 12, D, requires_grad=True)
    _, state = model(x, 4)
    assert len(state.cache) == model.cfg.n_layers
    assert all(c.shape == (2, 5, D) and not c.requires_grad for c in state.cache)
    torch.testing.assert_close(state.cache[0], x[:, -5:].detach())  # layer-0 input = embeddings


def test_xl_cache_lets_later_segments_see_earlier_ones():
    model = make(mem_len=4)
    x = torch.randn(1, 8, D)
    y = x.clone()
    y[:, 3] += torch.randn(D)
    assert not torch.allclose(model(x, 4)[0][:, 4:], model(y, 4)[0][:, 4:])


def test_padding_is_invisible_to_valid_tokens_and_to_the_write_block():
    model = make(num_mem_tokens=2)
    x = torch.randn(2, 6, D)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[0, 4:] = False
    h, state = model(x, 6, valid=valid)
    h_short, _ = model(x[:1, :4], 6)
    torch.testing.assert_close(h[0, :4], h_short[0])
    y = x.clone()
    y[0, 4:] = torch.randn(2, D)  # other content in the padded slots
    h_y, state_y = model(y, 6, valid=valid)
    torch.testing.assert_close(state.memory, state_y.memory)  # the write block never reads padding
    torch.testing.assert_close(h[:, :4], h_y[:, :4])
    assert torch.isfinite(h).all()
    # without the mask the padded content would leak into the memory
    assert not torch.allclose(model(x, 6)[1].memory[0], model(y, 6)[1].memory[0])


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_mrv_valve_is_multihead_attention_with_old_memory_as_query(activation):
    """The valve's hand-written arithmetic equals nn.MultiheadAttention's own forward on its
    parameters, with the old memory as the query and the activated write outputs as keys and
    values (not the other way round, nor a residual of either)."""
    model = make(num_mem_tokens=3, memory_update="mrv", mrv_heads=2, mrv_activation=activation).eval()
    valve = model.memory_update
    old, write = torch.randn(2, 3, D), torch.randn(2, 3, D)
    kv = valve.act(write)
    expected, _ = valve.cross(old, kv, kv, need_weights=False)
    torch.testing.assert_close(valve(old, write), expected, atol=1e-6, rtol=1e-5)
    swapped, _ = valve.cross(kv, old, old, need_weights=False)
    assert not torch.allclose(valve(old, write), swapped, atol=1e-3)


def test_memory_slots_are_initialised_independently():
    model = make(num_mem_tokens=4)
    w = model.memory.weight
    assert torch.cdist(w, w).triu(1)[torch.ones(4, 4).triu(1).bool()].min() > 0.1


def test_determinism_under_seed():
    """The same seed, the same dropout masks; another seed, others (dropout is on)."""
    outs = []
    for seed in (123, 123, 124):
        model = make(num_mem_tokens=2, mem_len=3, dropout=0.1).train()
        x = torch.randn(2, 9, D, generator=torch.Generator().manual_seed(0))
        torch.manual_seed(seed)
        outs.append(model(x, 3)[0])
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)
    assert not torch.allclose(outs[0], outs[2])


def test_a_float64_model_runs_in_float64_and_agrees_with_float32(scores_form):
    """model.double() computes in float64 throughout (the sinusoid table is float32 and must be
    projected in the model's dtype): full forward in either score form, and streaming decoding."""
    model = make(num_mem_tokens=2, mem_len=4)
    x = torch.randn(2, 10, D)
    expected, _ = model(x, segment_len=5)
    wide = make(num_mem_tokens=2, mem_len=4).double()
    out, _ = wide(x.double(), segment_len=5)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), expected, atol=1e-5, rtol=1e-5)
    decoding = StreamingDecoder(wide, segment_tokens=5)
    state, outs = decoding.initial(2), []
    with torch.no_grad():
        for seg in x.double().split(5, dim=1):
            state = decoding.close_full(state)
            h, state = decoding.step(state, seg)
            outs.append(h)
    # The positional tables are float32 in every dtype, so the forms agree to float32 rounding.
    torch.testing.assert_close(torch.cat(outs, 1), out.detach(), atol=1e-6, rtol=1e-6)


def reference_segment(model, x, state, cache_position):
    """One segment [read | x | write] with a Transformer-XL cache, written out pair by pair: every
    key has a position (official: [cache | read | segment | write] in order; contiguous: the read
    block at 0..m-1, the cache at m..m+c-1), every score uses the sinusoid of query minus key
    position, and the RMT mask decides which pairs count."""
    from rate.core.masks import rmt_segment_mask

    b, s, _ = x.shape
    m, c = model.cfg.num_mem_tokens, state.cache_len
    q_len = 2 * m + s
    pos = list(range(c + q_len))
    if cache_position == "contiguous":
        pos = [m + j for j in range(c)] + list(range(m)) + list(range(c + m, c + q_len))
    allowed = rmt_segment_mask(c, m, s, True, model.cfg.memory_sees_cache)
    h = torch.cat([state.memory, x, state.memory], dim=1)
    for layer, cache in zip(model.layers, state.cache):
        attn = layer.attn
        nh, dh = attn.n_heads, attn.d_head
        inp = layer.norm_attn(h)
        q, k, v = attn.qkv(inp).view(b, q_len, 3, nh, dh).unbind(2)  # (B, Q, H, dh)
        ck, cv = attn.qkv(layer.norm_attn(cache)).view(b, c, 3, nh, dh).unbind(2)[1:]
        k, v = torch.cat([ck, k], 1), torch.cat([cv, v], 1)  # (B, C + Q, H, dh)
        out = torch.zeros(b, q_len, nh, dh)
        for i in range(q_len):
            scores = torch.full((b, nh, c + q_len), -math.inf)
            for j in range(c + q_len):
                if not allowed[i, j]:
                    continue
                r = attn.r_proj(sinusoid_table(torch.tensor([pos[c + i] - pos[j]]), D)).view(nh, dh)
                scores[:, :, j] = (((q[:, i] + attn.u_bias) * k[:, j]).sum(-1)
                                   + ((q[:, i] + attn.v_bias) * r).sum(-1)) / math.sqrt(dh)
            out[:, i] = torch.einsum("bhj,bjhd->bhd", scores.softmax(-1), v)
        h = h + attn.out(out.reshape(b, q_len, nh * dh))
        h = h + layer.ffn(layer.norm_ffn(h))
    return model.final_norm(h)  # (B, Q, D): [read | segment | write] rows


@pytest.mark.parametrize("memory_sees_cache", [False, True])
@pytest.mark.parametrize("cache_position", ["official", "contiguous"])
def test_cache_positions_match_a_pair_by_pair_reference(cache_position, memory_sees_cache, scores_form):
    """The segment's outputs and the next memory (the write block's outputs, rmt update) of both
    layouts, with and without the memory rows seeing the cache (negative distances when the cache
    follows the read block)."""
    model = make(num_mem_tokens=2, mem_len=4, cache_position=cache_position, memory_sees_cache=memory_sees_cache)
    x = torch.randn(2, 10, D)
    with torch.no_grad():
        _, state = model(x[:, :5], segment_len=5)  # a first segment fills memory and cache
        h, after = model.forward_segment(x[:, 5:], state)
        expected = reference_segment(model, x[:, 5:], state, cache_position)
        torch.testing.assert_close(h, expected[:, 2:7], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(after.memory, expected[:, 7:], atol=1e-5, rtol=1e-5)


def test_the_two_cache_positions_differ_and_only_with_memory_and_cache():
    x = torch.randn(2, 10, D)
    outs = {p: make(num_mem_tokens=2, mem_len=4, cache_position=p)(x, segment_len=5)[0] for p in ("official", "contiguous")}
    assert not torch.allclose(outs["official"][:, 5:], outs["contiguous"][:, 5:])  # segment 2 sees the cache
    torch.testing.assert_close(outs["official"][:, :5], outs["contiguous"][:, :5])  # segment 1 has no cache yet
    for kw in (dict(mem_len=4), dict(num_mem_tokens=2)):  # no memory, or no cache: the same model
        a, b = (make(**kw, cache_position=p)(x, segment_len=5)[0] for p in ("official", "contiguous"))
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="full-segment forward only"):
        StreamingDecoder(make(num_mem_tokens=2, mem_len=4, cache_position="contiguous"), segment_tokens=5)
    from rate.rl.model import RATEConfig
    from train.experiments.algorithmic import AlgorithmicConfig

    contiguous = RMTConfig(num_mem_tokens=2, mem_len=4, cache_position="contiguous")
    for make_config in (lambda: RATEConfig(backbone=contiguous), lambda: AlgorithmicConfig(model=contiguous)):
        with pytest.raises(ValueError, match="full-segment forward only"):  # refused at config time
            make_config()


def test_the_carried_memory_keeps_its_dtype_under_autocast_whichever_rows_close():
    """Under bf16 autocast the valve computes in bf16: the memory a segment close carries on stays
    in the state's dtype whether every row closes (the in-step path) or some do (rows copied out
    and back), so a rollout's state does not change dtype with its rows' phases."""
    model = make(num_mem_tokens=2, memory_update="mrv", mrv_heads=2)
    decoding = StreamingDecoder(model, segment_tokens=3)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, full = decoding.step(decoding.initial(2), torch.randn(2, 3, D))  # both rows' segments full
        some = decoding.restart(full, torch.tensor([False, True]))  # row 1 starts over: only row 0 closes
        assert decoding.close_full(full).memory.dtype == torch.float32
        assert decoding.close_full(some).memory.dtype == torch.float32


def test_the_feed_forward_activation_is_a_setting():
    """GELU by default (old checkpoints build the same model); the reference code's ReLU on request,
    and its output differs from GELU's; a misspelt choice is refused by name."""
    torch.manual_seed(0)
    cfg = RMTConfig(d_model=16, n_layers=1, n_heads=2, d_head=8, d_inner=32, num_mem_tokens=2)
    gelu = RecurrentMemoryTransformer(cfg).eval()
    relu = RecurrentMemoryTransformer(RMTConfig(**{**cfg.__dict__, "ffn_activation": "relu"})).eval()
    assert isinstance(gelu.layers[0].ffn[1], torch.nn.GELU) and isinstance(relu.layers[0].ffn[1], torch.nn.ReLU)
    relu.load_state_dict(gelu.state_dict())  # the same parameters
    x = torch.randn(2, 8, 16)
    assert not torch.allclose(gelu(x, segment_len=4)[0], relu(x, segment_len=4)[0])
    with pytest.raises(ValueError, match="ffn_activation must be one of 'gelu', 'relu'"):
        RMTConfig(ffn_activation="Relu")


def test_a_model_made_under_inference_mode_streams():
    """Weights made inside torch.inference_mode have no version counter, which the decoder's kept
    positional projection reads elsewhere: such a model decodes, with the same outputs."""
    x = torch.randn(2, 8, D, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        inference_made = make(num_mem_tokens=2)
        decoding = StreamingDecoder(inference_made, segment_tokens=4)
        got, _ = decoding.step(decoding.initial(2), x[:, :4])
        for layer in inference_made.layers:  # (an in-place update, as load_state_dict under inference_mode)
            layer.attn.r_proj.weight.mul_(2)
        got_after, _ = decoding.step(decoding.initial(2), x[:, :4])
    model = make(num_mem_tokens=2)
    expected, _ = model(x, segment_len=4)
    torch.testing.assert_close(got, expected[:, :4], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        for layer in model.layers:
            layer.attn.r_proj.weight.mul_(2)
    expected_after, _ = model(x, segment_len=4)
    torch.testing.assert_close(got_after, expected_after[:, :4], atol=1e-5, rtol=1e-5)


def test_a_bf16_model_trains_through_the_factored_form(force_scores):
    """The factored form's complex rotation runs in float32 for a bfloat16 model (no bfloat16
    complex type), in backward too: its gradients follow the float32 model's."""
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        calls = force_scores("factored")
        model = make(num_mem_tokens=2, use_ffn=False).to(dtype).train()
        x = torch.randn(2, 12, D, generator=torch.Generator().manual_seed(5)).to(dtype)
        probe = torch.randn(D, generator=torch.Generator().manual_seed(6))
        (model(x, segment_len=6)[0].float() * probe).sum().backward()
        assert calls[0] > 0
        grads[dtype] = model.layers[0].attn.r_proj.weight.grad.float()
    expected = grads[torch.float32]
    assert (grads[torch.bfloat16] - expected).norm() < 0.05 * expected.norm()


def test_restart_refuses_masks_and_indices_that_do_not_fit_the_batch():
    decoding = StreamingDecoder(make(num_mem_tokens=2), segment_tokens=4)
    state = decoding.initial(3)
    with pytest.raises(ValueError, match=r"bool mask of shape \(3,\).*got a mask of shape \(2,\)"):
        decoding.restart(state, torch.tensor([False, True]))
    with pytest.raises(ValueError, match=r"indices lie in 0..2; got \[3\]"):
        decoding.restart(state, torch.tensor([3]))
    with pytest.raises(ValueError, match=r"x of shape \(B, n, D\) = \(3, n, 32\).*got \(2, 1, 32\)"):
        decoding.step(state, torch.randn(2, 1, D))
    decoding.restart(state, torch.tensor([True, False, True]))  # (the right shapes pass)


def test_a_wrapped_or_hooked_projection_is_applied_through_the_module():
    """The cache's keys/values (project_kv) go through qkv's forward hooks as the segment's own
    keys do; a hooked r_proj keeps the factored form away (it applies W_r itself)."""
    attn = make(num_mem_tokens=2, mem_len=3).layers[0].attn
    x = torch.randn(2, 5, D)
    plain = attn.project_kv(x)
    handle = attn.qkv.register_forward_hook(lambda module, inputs, out: out * 2)
    hooked = attn.project_kv(x)
    for a, b in zip(hooked, plain):
        torch.testing.assert_close(a, 2 * b)
    handle.remove()
    positions = attention.RelativePositions(0, 5, 5, D)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attention, "FACTORED_MIN_ELEMENTS_PER_CHANNEL", 0)
        assert attn._factored_pays(positions, 2, 5, 5)
        attn.r_proj.register_forward_pre_hook(lambda module, inputs: None)
        assert not attn._factored_pays(positions, 2, 5, 5)


@pytest.mark.parametrize("name", CONFIGS)
def test_a_row_restarted_mid_segment_decodes_its_new_episode_as_the_full_forward_does(name):
    """Row 0 starts over after 5 tokens (the others go on, now at another phase of their
    segments): its outputs from then on are the full forward's over its new episode alone, and
    the other rows' are the full forward's over theirs."""
    model = make(**CONFIGS[name])
    x = torch.randn(3, 12, D, generator=torch.Generator().manual_seed(7))
    decoding = StreamingDecoder(model, segment_tokens=4)
    state, outs = decoding.initial(3), []
    for t in range(12):
        if t == 5:
            state = decoding.restart(state, torch.tensor([True, False, False]))
        h, state = decoding.step(decoding.close_full(state), x[:, t : t + 1])
        outs.append(h)
    outs = torch.cat(outs, 1)
    torch.testing.assert_close(outs[0, 5:], model(x[:1, 5:], segment_len=4)[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[1:], model(x[1:], segment_len=4)[0], atol=1e-5, rtol=1e-5)

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from lightly_amix.mixing.mix_block import (
    MixBlock,
    MixBlockConfig,
    mix_images,
    rescale_lambda,
    table8_rows,
)

C, HW, IMG = 16, 4, 32


def feats(n: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, HW, HW, generator=g), torch.randn(n, C, HW, HW, generator=g)


SWITCHES = list(
    itertools.product(
        ("adaptive", "concat"), ("nonlinear", "linear"), ("self", "cross"), ("bilinear", "nearest")
    )
)


@pytest.mark.parametrize(("lam_enc", "content", "attention", "upsample"), SWITCHES)
@pytest.mark.parametrize("lam", [0.3, "per-sample"])
def test_every_switch_combination_gives_a_valid_mask(
    lam_enc: str, content: str, attention: str, upsample: str, lam: float | str
) -> None:
    cfg = MixBlockConfig(
        lam_encoding=lam_enc, content=content, attention=attention, upsample=upsample
    )
    block = MixBlock(C, cfg)
    z_i, z_j = feats()
    lam_t = torch.tensor([0.1, 0.5, 0.9]) if lam == "per-sample" else lam
    mask = block(z_i, z_j, lam_t, out_size=(IMG, IMG + 8))
    assert mask.shape == (3, 1, IMG, IMG + 8) and mask.dtype == torch.float32
    assert bool(((mask >= 0) & (mask <= 1)).all())
    mask.sum().backward()
    assert all(p.grad is not None for p in block.parameters() if p.requires_grad)


def test_initial_mask_is_about_one_half() -> None:
    torch.manual_seed(0)
    block = MixBlock(C).eval()
    z_i, z_j = feats(8)
    mask = block(z_i * 3, z_j * 3, torch.rand(8), out_size=(IMG, IMG))
    assert (mask - 0.5).abs().max() < 0.05


@pytest.mark.parametrize("content", ["nonlinear", "linear"])
def test_small_init_of_the_output_layer_only(content: str) -> None:
    torch.manual_seed(0)
    every = MixBlock(C, MixBlockConfig(content=content, small_init="all"))
    torch.manual_seed(0)
    output = MixBlock(C, MixBlockConfig(content=content, small_init="output"))
    last = "content.fc2.weight" if content == "nonlinear" else "content.fc.weight"
    for name, param in output.named_parameters():
        if name == last:
            assert param.std().item() == pytest.approx(0.01, rel=0.5)
        elif name.endswith("weight") and param.dim() == 2:
            # PyTorch's default init: U(±1/sqrt(fan_in)), std 1/sqrt(3 fan_in) >> 0.01.
            expected = 1 / math.sqrt(3 * param.shape[1])
            assert param.std().item() == pytest.approx(expected, rel=0.3), name
            assert dict(every.named_parameters())[name].std().item() < 0.02, name
    # Either way the first masks are about one half (the output layer is small).
    z_i, z_j = feats(8)
    for block in (every.eval(), output.eval()):
        mask = block(z_i * 3, z_j * 3, torch.rand(8), out_size=(IMG, IMG))
        assert (mask - 0.5).abs().max() < 0.1


def test_gamma_learnable_initialised_to_zero_and_clamped() -> None:
    block = MixBlock(C)
    assert isinstance(block.gamma, torch.nn.Parameter) and block.gamma.item() == 0.0
    with torch.no_grad():
        block.gamma.fill_(3.0)
    assert block.gamma_value().item() == 1.0
    with torch.no_grad():
        block.gamma.fill_(-2.0)
    assert block.gamma_value().item() == 0.0
    fixed = MixBlock(C, MixBlockConfig(gamma="fixed"))
    assert "gamma" not in dict(fixed.named_parameters()) and fixed.gamma_value().item() == 1.0


def test_gamma_learns_from_its_initial_zero() -> None:
    """γ starts at the clamp's bound; a plain clamp would pass it no gradient, ever."""
    torch.manual_seed(0)
    block = MixBlock(C).eval()  # no dropout: the same mask for both signs
    z_i, z_j = feats(8)
    lam = torch.rand(8)

    def objective(sign: float) -> torch.Tensor:
        """Rewards (sign 1) or penalises masks whose mean follows λ: needs the λ encoding."""
        mask = block(z_i, z_j, lam, out_size=(IMG, IMG))
        return -sign * (mask.mean(dim=(1, 2, 3)) * (2 * lam - 1)).sum()

    grads = []
    for sign in (1.0, -1.0):
        block.gamma.grad = None
        objective(sign).backward()
        assert block.gamma.grad is not None
        grads.append(block.gamma.grad.item())
    assert grads[0] != 0.0 and grads[0] == pytest.approx(-grads[1])
    # The descent direction that raises γ moves the used value off 0 ...
    up = 1.0 if grads[0] < 0 else -1.0
    optimizer = torch.optim.SGD([block.gamma], lr=50.0)
    for _ in range(3):
        optimizer.zero_grad()
        objective(up).backward()
        optimizer.step()
    assert 0.0 < block.gamma_value().item() <= 1.0
    # ... and the opposite one pushes γ below 0, where the value stays clamped at 0 but the
    # gradient still flows, so γ can come back.
    with torch.no_grad():
        block.gamma.fill_(-0.1)
    block.gamma.grad = None
    objective(up).backward()
    assert block.gamma_value().item() == 0.0 and block.gamma.grad.abs().item() > 0.0


def test_adaptive_lambda_encoding_formula() -> None:
    block = MixBlock(C, MixBlockConfig(gamma="fixed"))  # γ = 1
    z_i, z_j = feats()
    lam = torch.tensor([0.2, 0.5, 1.0])
    a, b = block.encode_lambda(z_i, z_j, lam)
    for n in range(3):
        assert torch.allclose(a[n], (1 + lam[n]) * z_i[n])
        assert torch.allclose(b[n], (1 + (1 - lam[n])) * z_j[n])
    concat = MixBlock(C, MixBlockConfig(lam_encoding="concat"))
    a, b = concat.encode_lambda(z_i, z_j, lam)
    assert a.shape == (3, C + 1, HW, HW)
    assert torch.equal(a[:, :C], z_i) and torch.all(a[:, C] == lam.view(3, 1, 1))
    assert torch.all(b[:, C] == 1 - lam.view(3, 1, 1))


def test_forward_matches_a_direct_recomputation_of_eq_5() -> None:
    torch.manual_seed(1)
    block = MixBlock(C, MixBlockConfig(init_std=0.3)).eval()
    with torch.no_grad():
        block.gamma.fill_(0.7)
    z_i, z_j = feats(2)
    lam = torch.tensor([0.25, 0.6])
    mask = block(z_i, z_j, lam, out_size=(IMG, IMG))
    for n in range(2):
        zi = (1 + 0.7 * lam[n]) * z_i[n : n + 1]
        zj = (1 + 0.7 * (1 - lam[n])) * z_j[n : n + 1]
        z_cat = torch.cat([zi, zj], dim=1).reshape(2 * C, HW * HW)  # (2C, hw)
        # 1x1 convolutions written out as matrix products over the channels.
        q = block.query.weight @ z_cat + block.query.bias[:, None]  # (d, hw)
        k = block.key.weight @ z_cat + block.key.bias[:, None]  # (d, hw)
        p = torch.softmax(q.T @ k / math.sqrt(C // 2), dim=1)  # (hw, hw), softmax over keys
        net = block.content
        hidden = net.fc1.weight @ zi.reshape(C, HW * HW) + net.fc1.bias[:, None]  # (d, hw)
        bn = net.bn  # eval mode: running statistics
        hidden = (hidden - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps)
        hidden = torch.relu(hidden * bn.weight[:, None] + bn.bias[:, None])
        content = (net.fc2.weight @ hidden + net.fc2.bias[:, None]).reshape(HW * HW)  # (hw,)
        low = torch.sigmoid(p @ content).reshape(1, 1, HW, HW)  # s = U(sigmoid(P ⊗ C))
        expected = F.interpolate(low, size=(IMG, IMG), mode="bilinear")
        assert torch.allclose(mask[n : n + 1], expected, atol=1e-5)


def test_cross_attention_uses_queries_of_i_and_keys_of_j() -> None:
    block = MixBlock(C, MixBlockConfig(attention="cross", lam_encoding="adaptive"))
    z_i, z_j = feats(1)
    t_i, t_j = z_i.flatten(2).transpose(1, 2), z_j.flatten(2).transpose(1, 2)  # (1, hw, C)
    p = block.attention(t_i, t_j)
    q = block.query(t_i[0])  # (hw, d)
    k = block.key(t_j[0])  # (hw, d)
    assert torch.allclose(p[0], torch.softmax(q @ k.T / math.sqrt(C // 2), dim=1), atol=1e-6)
    assert torch.allclose(p.sum(-1), torch.ones(1, HW * HW))


def test_gradient_reaches_the_block_but_not_the_feature_producer() -> None:
    producer = torch.nn.Conv2d(3, C, 1)
    x = torch.randn(2, 3, HW, HW)
    z = producer(x)
    block = MixBlock(C)
    mask = block(z, z.flip(0), torch.tensor([0.3, 0.7]), out_size=(IMG, IMG))
    (mask * torch.randn_like(mask)).sum().backward()
    assert producer.weight.grad is None
    grads = {n: p.grad for n, p in block.named_parameters()}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert grads["content.fc2.weight"].abs().sum() > 0 and grads["query.weight"].abs().sum() > 0


def test_dropout_only_in_training_mode() -> None:
    block = MixBlock(C, MixBlockConfig(dropout=0.5, init_std=0.3))
    z_i, z_j = feats()
    block.eval()
    a = block(z_i, z_j, 0.5, (IMG, IMG))
    b = block(z_i, z_j, 0.5, (IMG, IMG))
    assert torch.equal(a, b)
    block.train()
    torch.manual_seed(0)
    c = block(z_i, z_j, 0.5, (IMG, IMG))
    torch.manual_seed(1)
    d = block(z_i, z_j, 0.5, (IMG, IMG))
    assert not torch.equal(c, d)


def test_attention_is_fp32_under_bf16_autocast() -> None:
    """Under bf16 autocast the attention logits and softmax run in fp32 (bf16 keeps ~3 digits:
    large logits would be rounded and the softmax would pick other winners)."""
    torch.manual_seed(0)
    block = MixBlock(C, MixBlockConfig(init_std=0.5))
    z_i, z_j = feats()
    big = 3.0  # logits of order 10: bf16 keeps about 3 digits of them
    tokens = (z_i * big).flatten(2).transpose(1, 2)
    reference = block.attention(tokens, tokens)  # fp32, no autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = block.attention(tokens, tokens)
        mask = block(z_i * big, z_j * big, 0.5, (IMG, IMG))
    assert p.dtype == torch.float32 and mask.dtype == torch.float32
    # Only the projections ran in bf16; the logits and softmax did not lose precision again.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q16 = block.query(torch.cat([tokens, tokens], -1)).float()
        k16 = block.key(torch.cat([tokens, tokens], -1)).float()
    expected = torch.softmax(q16 @ k16.transpose(1, 2) / math.sqrt(C // 2), dim=-1)
    assert torch.allclose(p, expected, atol=1e-5)
    rounded = torch.softmax((q16.bfloat16() @ k16.bfloat16().transpose(1, 2)).float()
                            / math.sqrt(C // 2), dim=-1)  # fmt: skip
    assert (rounded - expected).abs().max() > 1e-3  # what a bf16 product would have given
    assert torch.isfinite(mask).all() and (reference - p).abs().max() < 0.5


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("size", [(32, 32), (24, 40), (7, 5)])
def test_upsampling_equals_f_interpolate(mode: str, size: tuple[int, int]) -> None:
    cfg = MixBlockConfig(upsample=mode, init_std=0.5)
    block = MixBlock(C, cfg).eval()
    z_i, z_j = feats()
    mask = block(z_i, z_j, 0.4, size)
    zi, zj = block.encode_lambda(z_i, z_j, torch.full((3,), 0.4))
    t_i, t_j = zi.flatten(2).transpose(1, 2), zj.flatten(2).transpose(1, 2)
    p = block.attention(t_i, t_j)
    low = torch.sigmoid(torch.einsum("npq,nq->np", p, block.content(t_i)))
    align = False if mode == "bilinear" else None
    expected = F.interpolate(low.view(3, 1, HW, HW), size=size, mode=mode, align_corners=align)
    assert torch.allclose(mask, expected, atol=1e-6)


def test_nearest_upsampling_is_blocky_and_bilinear_smooth() -> None:
    z_i, z_j = feats()
    near = MixBlock(C, MixBlockConfig(upsample="nearest", init_std=0.5)).eval()
    smooth = MixBlock(C, MixBlockConfig(upsample="bilinear", init_std=0.5)).eval()
    smooth.load_state_dict(near.state_dict())
    cell = IMG // HW
    mask = near(z_i, z_j, 0.5, (IMG, IMG))
    blocks = mask.view(3, 1, HW, cell, HW, cell)
    assert torch.allclose(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))
    # Bilinear: not constant within a cell, and no step between neighbours larger than the
    # largest step of the nearest mask divided by the cell size (a linear ramp over a cell).
    soft = smooth(z_i, z_j, 0.5, (IMG, IMG))
    soft_blocks = soft.view(3, 1, HW, cell, HW, cell)
    assert not torch.allclose(soft_blocks, soft_blocks[:, :, :, :1, :, :1].expand_as(soft_blocks))
    step_near = (mask[..., 1:] - mask[..., :-1]).abs().max()
    step_soft = (soft[..., 1:] - soft[..., :-1]).abs().max()
    assert step_soft <= step_near / cell + 1e-6 and step_near > 0.01


def test_table8_rows_turn_on_one_switch_each() -> None:
    rows = table8_rows()
    assert [name for name, _ in rows][0] == "MixBlock"
    assert rows[0][1] == MixBlockConfig.automix_paper()
    assert rows[-1][1] == replace(MixBlockConfig.paper(), dropout=rows[-1][1].dropout)
    for (_, before), (_, after) in zip(rows, rows[1:], strict=False):
        changed = [k for k in vars(before) if getattr(before, k) != getattr(after, k)]
        assert len(changed) == 1, changed


def test_fixed_seed_gives_identical_masks() -> None:
    def make() -> torch.Tensor:
        torch.manual_seed(7)
        block = MixBlock(C)
        return block(*feats(), 0.4, (IMG, IMG))

    assert torch.equal(make(), make())


def test_mix_images() -> None:
    x = torch.randn(3, 3, 8, 8)
    perm = torch.tensor([2, 0, 1])
    mask = torch.rand(3, 1, 8, 8)
    assert torch.allclose(mix_images(x, perm, mask), mask * x + (1 - mask) * x[perm], atol=1e-6)
    with pytest.raises(ValueError, match="mask must have shape"):
        mix_images(x, perm, mask[:, :, :4])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"content": "mlp"}, "Invalid content 'mlp'"),
        ({"attention": "global"}, "Invalid attention"),
        ({"dropout": 1.0}, "dropout"),
        ({"mask_margin": -1.0}, "mask_margin"),
        ({"small_init": "none"}, "Invalid small_init 'none'"),
    ],
)
def test_bad_config(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MixBlockConfig(**kwargs)


def test_bad_inputs() -> None:
    block = MixBlock(C)
    z_i, z_j = feats()
    with pytest.raises(ValueError, match="must both have shape"):
        block(z_i, z_j[:, :8], 0.5, (IMG, IMG))
    with pytest.raises(ValueError, match=r"lam must lie in \[0, 1\]"):
        block(z_i, z_j, 1.5, (IMG, IMG))
    with pytest.raises(ValueError, match="lam must be a scalar or have shape"):
        block(z_i, z_j, torch.rand(2), (IMG, IMG))


def test_reference_code_options() -> None:
    cfg = MixBlockConfig(gamma="fixed", activation="elu", dropout=0.0)
    block = MixBlock(C, cfg)
    assert isinstance(block.content.act, torch.nn.ELU) and block.content.drop.p == 0.0
    mask = block(*feats(), torch.tensor([0.2, 0.5, 0.8]), (IMG, IMG))
    assert mask.shape == (3, 1, IMG, IMG) and bool(((mask >= 0) & (mask <= 1)).all())


def test_partner_share_is_one_minus_the_mask() -> None:
    """Each mixed image is ``s ⊙ x_i + (1 − s) ⊙ x_perm[i]``: the partner gets ``1 − s``."""
    x = torch.randn(4, 3, 8, 8)
    perm = torch.tensor([1, 2, 3, 0])  # a 4-cycle: i's partner is not i's partner's partner
    mask = torch.rand(4, 1, 8, 8)
    mixed = mix_images(x, perm, mask)
    for i in range(4):
        expected = mask[i] * x[i] + (1 - mask[i]) * x[int(perm[i])]
        assert torch.allclose(mixed[i], expected, atol=1e-6)
    # Seen from the partner: its share of every pixel is 1 − s.
    share_of_partner = (mixed - x) / (x[perm] - x)
    assert torch.allclose(share_of_partner, (1 - mask).expand_as(x), atol=1e-3)


def test_gamma_is_projected_back_and_returns_when_the_gradient_turns() -> None:
    """Projected SGD: a push below 0 leaves γ at 0 (not at −9), so it can rise again at once."""
    torch.manual_seed(0)
    z_i, z_j = feats(8)
    lam = torch.rand(8)
    block = MixBlock(C)

    def follow_lambda(sign: float) -> torch.Tensor:
        mask = block(z_i, z_j, lam, out_size=(IMG, IMG))
        return -sign * (mask.mean(dim=(1, 2, 3)) * (2 * lam - 1)).sum()

    optimizer = torch.optim.SGD([block.gamma], lr=50.0)
    for _ in range(5):  # penalise following λ: the raw γ would run far below 0
        optimizer.zero_grad()
        follow_lambda(-1.0).backward()
        optimizer.step()
    block(z_i, z_j, lam, out_size=(IMG, IMG))  # the next training forward projects it
    assert block.gamma.item() == 0.0
    block.eval()
    with torch.no_grad():
        block.gamma.fill_(-1.0)
        block(z_i, z_j, lam, out_size=(IMG, IMG))
    assert block.gamma.item() == -1.0  # eval never changes parameters (the value is clamped)
    block.train()
    for _ in range(3):  # now reward following λ: γ leaves 0 within the first steps
        optimizer.zero_grad()
        follow_lambda(1.0).backward()
        optimizer.step()
    block(z_i, z_j, lam, out_size=(IMG, IMG))
    assert 0.0 < block.gamma.item() <= 1.0


# ----------------------------------------------------------------- cross attention (values)
@pytest.mark.parametrize("cfg", [MixBlockConfig.automix(), MixBlockConfig.automix_paper()],
                         ids=["code", "paper"])  # fmt: skip
def test_cross_attention_values_move_with_the_keys(cfg: MixBlockConfig) -> None:
    """Keys and values come from z_j: permuting z_j's positions alone leaves the mask as it is.

    (With values from z_i, the weights over *j's* key positions multiplied *i's* content at
    the same indices, and the same permutation changed the mask by up to 0.40.)
    """
    torch.manual_seed(0)
    block = MixBlock(C, replace(cfg, init_std=0.5)).eval()
    z_i, z_j = feats(4)
    lam = torch.tensor([0.2, 0.4, 0.6, 0.8])
    perm = torch.randperm(HW * HW)
    z_j_perm = z_j.flatten(2)[:, :, perm].view_as(z_j)
    before = block(z_i, z_j, lam, (IMG, IMG))
    after = block(z_i, z_j_perm, lam, (IMG, IMG))
    assert (before - 0.5).abs().max() > 0.05  # the check is not on a constant mask
    assert torch.allclose(before, after, atol=1e-6)
    # Permuting z_i's positions instead moves the mask with them (queries index the output).
    z_i_perm = z_i.flatten(2)[:, :, perm].view_as(z_i)
    low = block(z_i, z_j, lam, (HW, HW)).flatten(2)[:, :, perm]
    assert torch.allclose(block(z_i_perm, z_j, lam, (HW, HW)).flatten(2), low, atol=1e-6)


def test_cross_attention_returns_one_minus_the_partners_share() -> None:
    """s_i = 1 − U(σ(P ⊗ C(z_j'))), P from queries of z_i' and keys of z_j' (direct recompute)."""
    torch.manual_seed(2)
    cfg = replace(MixBlockConfig.automix_paper(), init_std=0.3, upsample="bilinear")
    block = MixBlock(C, cfg).eval()
    z_i, z_j = feats(2)
    lam = torch.tensor([0.3, 0.7])
    mask = block(z_i, z_j, lam, (IMG, IMG))
    for n in range(2):
        zi = torch.cat([z_i[n], torch.full((1, HW, HW), float(lam[n]))]).reshape(C + 1, -1)
        zj = torch.cat([z_j[n], torch.full((1, HW, HW), 1 - float(lam[n]))]).reshape(C + 1, -1)
        q = block.query.weight @ zi + block.query.bias[:, None]  # (d, hw)
        k = block.key.weight @ zj + block.key.bias[:, None]  # (d, hw)
        p = torch.softmax(q.T @ k / math.sqrt(C // 2), dim=1)  # (hw, hw)
        v = block.content.fc.weight @ zj + block.content.fc.bias[:, None]  # (1, hw): z_j's
        low = torch.sigmoid(p @ v.T).reshape(1, 1, HW, HW)
        expected = 1 - F.interpolate(low, size=(IMG, IMG), mode="bilinear")
        assert torch.allclose(mask[n : n + 1], expected, atol=1e-5)


# ----------------------------------------------------------------- the authors' code switches
def test_no_lambda_encoding_makes_the_mask_independent_of_lambda() -> None:
    block = MixBlock(C, replace(MixBlockConfig.automix(), init_std=0.5)).eval()
    z_i, z_j = feats()
    a = block(z_i, z_j, torch.tensor([0.1, 0.5, 0.9]), (IMG, IMG))
    b = block(z_i, z_j, torch.tensor([0.9, 0.2, 0.3]), (IMG, IMG))
    assert torch.equal(a, b)
    with_lam = MixBlock(C, replace(MixBlockConfig.automix_paper(), init_std=0.5)).eval()
    a = with_lam(z_i, z_j, torch.tensor([0.1, 0.5, 0.9]), (IMG, IMG))
    b = with_lam(z_i, z_j, torch.tensor([0.9, 0.2, 0.3]), (IMG, IMG))
    assert not torch.allclose(a, b)


def test_shared_qk_uses_the_query_projection_for_keys() -> None:
    block = MixBlock(C, MixBlockConfig.automix())
    assert block.key is block.query
    assert sum(p.numel() for p in block.parameters()) == (C + 1) * (C // 2) + (C + 1)
    with pytest.raises(ValueError, match="shared_qk needs attention='cross'"):
        MixBlock(C, MixBlockConfig(shared_qk=True))


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_upsample_logits_then_sigmoid(mode: str) -> None:
    """``upsample_logits``: σ(U(P ⊗ C)) instead of U(σ(P ⊗ C)); same low-resolution logits."""
    torch.manual_seed(3)
    cfg = MixBlockConfig(init_std=0.5, upsample=mode, gamma="fixed")
    first = MixBlock(C, cfg).eval()
    second = MixBlock(C, replace(cfg, upsample_logits=True)).eval()
    second.load_state_dict(first.state_dict())
    z_i, z_j = feats()
    lam = torch.tensor([0.2, 0.5, 0.8])
    low = first(z_i, z_j, lam, (HW, HW))  # σ(P ⊗ C) at the map's size
    logits = torch.logit(low)
    align = False if mode == "bilinear" else None
    expected = torch.sigmoid(F.interpolate(logits, size=(IMG, IMG), mode=mode, align_corners=align))
    assert torch.allclose(second(z_i, z_j, lam, (IMG, IMG)), expected, atol=1e-5)
    if mode == "bilinear":  # differs from upsampling the sigmoid's output
        assert not torch.allclose(first(z_i, z_j, lam, (IMG, IMG)), expected, atol=1e-4)


def test_transpose_attention_aggregates_with_p_transposed() -> None:
    torch.manual_seed(4)
    cfg = MixBlockConfig(init_std=0.5, gamma="fixed", dropout=0.0)
    plain = MixBlock(C, cfg).eval()
    transposed = MixBlock(C, replace(cfg, transpose_attention=True)).eval()
    transposed.load_state_dict(plain.state_dict())
    z_i, z_j = feats()
    lam = torch.tensor([0.2, 0.5, 0.8])
    zi, zj = plain.encode_lambda(z_i, z_j, lam)
    t_i, t_j = zi.flatten(2).transpose(1, 2), zj.flatten(2).transpose(1, 2)
    p = plain.attention(t_i, t_j)  # (N, hw, hw)
    content = plain.content(t_i).unsqueeze(2)  # (N, hw, 1)
    expected = torch.sigmoid(p.transpose(1, 2) @ content).view(3, 1, HW, HW)
    assert torch.allclose(transposed(z_i, z_j, lam, (HW, HW)), expected, atol=1e-6)


def test_content_without_biases() -> None:
    block = MixBlock(C, MixBlockConfig.samix())
    content = block.content
    assert content.fc1.bias is None and content.fc2.bias is None
    assert isinstance(content.act, torch.nn.ELU) and content.drop.p == 0.0


def test_lambda_rescaling_matches_the_formula_and_enters_the_encoding() -> None:
    lam = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
    k = 0.25
    expected = (4 / 3 * lam**3 - 2 * lam**2 + (k + 1) * lam) / (k + 1 - 2 / 3)
    assert torch.allclose(rescale_lambda(lam, k), expected)
    assert torch.allclose(rescale_lambda(torch.tensor([0.0, 0.5, 1.0]), k),
                          torch.tensor([0.0, 0.5, 1.0]))  # fmt: skip
    block = MixBlock(C, MixBlockConfig.samix())  # γ = 1 fixed
    z_i, z_j = feats()
    lam3 = torch.tensor([0.1, 0.5, 0.9])
    a, b = block.encode_lambda(z_i, z_j, lam3)
    r = rescale_lambda(lam3, k).view(3, 1, 1, 1)
    assert torch.allclose(a, (1 + r) * z_i) and torch.allclose(b, (2 - r) * z_j)


def test_profiles_reproduce_the_authors_code() -> None:
    automix = MixBlockConfig.automix()
    assert (automix.lam_encoding, automix.content, automix.attention, automix.upsample) == (
        "none", "linear", "cross", "nearest")  # fmt: skip
    assert automix.upsample_logits and automix.shared_qk and not automix.lambda_adjust
    assert (automix.mask_loss, automix.mask_loss_reduction) == ("mean", "batch")
    samix = MixBlockConfig.samix()
    assert (samix.gamma, samix.lam_rescale, samix.attention) == ("fixed", 0.25, "self")
    assert samix.transpose_attention and samix.upsample_logits and not samix.content_bias
    assert (samix.mask_loss_reduction, samix.variance_weight) == ("batch", 2.0)
    assert samix.adjust_probability == 0.25 and samix.dropout == 0.0
    for cfg in (automix, samix):
        mask = MixBlock(C, cfg)(*feats(), torch.tensor([0.2, 0.5, 0.8]), (IMG, IMG))
        assert mask.shape == (3, 1, IMG, IMG) and bool(((mask >= 0) & (mask <= 1)).all())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"adjust_probability": 1.5}, "adjust_probability"), ({"lam_rescale": -1.0}, "lam_rescale"),
     ({"variance_weight": -1.0}, "variance_weight"),
     ({"mask_loss_reduction": "mean"}, "mask_loss_reduction")],
)  # fmt: skip
def test_bad_new_switches(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MixBlockConfig(**kwargs)


def test_the_default_is_the_paper_with_the_mask_labs_normalised_variance() -> None:
    default, paper = MixBlockConfig(), MixBlockConfig.paper()
    changed = {k for k in vars(default) if getattr(default, k) != getattr(paper, k)}
    assert changed == {"variance_norm", "variance_weight"}
    assert default.variance_norm and default.variance_weight == 2.0
    assert not paper.variance_norm and paper.variance_weight == 1.0
    for profile in (
        MixBlockConfig.automix(),
        MixBlockConfig.samix(),
        MixBlockConfig.automix_paper(),
    ):
        assert not profile.variance_norm  # the authors' code and the paper: a plain variance

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from lightly_amix.mixing.mix_block import MixBlock, MixBlockConfig, mix_images, table8_rows

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


def test_attention_is_fp32_under_bf16_autocast_without_overflow() -> None:
    block = MixBlock(C)
    z_i, z_j = feats()
    big = 1e3  # fp16 would overflow: the logits reach ~1e6
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = (z_i * big).flatten(2).transpose(1, 2)
        p = block.attention(tokens, tokens)
        mask = block(z_i * big, z_j * big, 0.5, (IMG, IMG))
    assert p.dtype == torch.float32 and torch.isfinite(p).all()
    assert torch.isfinite(mask).all() and mask.dtype == torch.float32


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
    mask = near(z_i, z_j, 0.5, (IMG, IMG))
    cell = IMG // HW
    blocks = mask.view(3, 1, HW, cell, HW, cell)
    assert torch.allclose(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))


def test_table8_rows_turn_on_one_switch_each() -> None:
    rows = table8_rows()
    assert [name for name, _ in rows][0] == "MixBlock"
    assert rows[0][1] == MixBlockConfig.automix()
    assert rows[-1][1] == replace(MixBlockConfig(), dropout=rows[-1][1].dropout)
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
    x = torch.randn(4, 3, 8, 8)
    perm = torch.tensor([1, 0, 3, 2])  # pairs swap partners
    mask = torch.rand(4, 1, 8, 8)
    mixed = mix_images(x, perm, mask)
    # Seen from the partner: s_j = 1 − s_i gives the same mixed image.
    assert torch.allclose(mixed, mix_images(x[perm], perm, 1 - mask), atol=1e-6)


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

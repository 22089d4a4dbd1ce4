# AMix for SimCLR in a plain PyTorch loop: a learned mixup with in-batch negatives.
#
# SimCLR (Lightly's projection head, NTXentLoss and transform) plus a Mix Block+ (AMix, §3):
# the backbone also learns from the mixup InfoNCE of the first views mixed by the Mix Block's
# detached, λ-adjusted mask (positives: both sources' second views; negatives: the other
# images' second views); the Mix Block learns through a frozen EMA copy of the encoder.
#
#   python examples/pytorch/amix_simclr.py --data path/to/images --epochs 10
import argparse
import copy

import torch
import torch.nn.functional as F
from lightly.data import LightlyDataset
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import SimCLRTransform

from lightly_amix import LearnedMixup, MixBlockConfig, ResNetBackbone, sample_lambda
from lightly_amix.losses import mixup_bce, mixup_info_nce

parser = argparse.ArgumentParser(description="AMix-SimCLR pre-training on a folder of images.")
parser.add_argument("--data", required=True, help="a folder of images")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: all)")
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--input-size", type=int, default=96)
parser.add_argument("--queue-size", type=int, default=0, help="unused (no queue)")
args = parser.parse_args()
device = "cuda" if torch.cuda.is_available() else "cpu"
t = 0.5

backbone = ResNetBackbone("resnet18")
head = SimCLRProjectionHead(backbone.out_dim, 512, 128)
backbone_ema, head_ema = copy.deepcopy(backbone), copy.deepcopy(head)
deactivate_requires_grad(backbone_ema)
deactivate_requires_grad(head_ema)
mix_block = LearnedMixup(backbone.stage3_dim, MixBlockConfig())  # Mix Block+
criterion = NTXentLoss(temperature=t)
for module in (backbone, head, backbone_ema, head_ema, mix_block):
    module.to(device)
dataset = LightlyDataset(args.data, transform=SimCLRTransform(input_size=args.input_size))
loader = torch.utils.data.DataLoader(
    dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=2
)
params = [*backbone.parameters(), *head.parameters(), *mix_block.parameters()]
optimizer = torch.optim.SGD(
    params, lr=0.06 * args.batch_size / 256, momentum=0.9, weight_decay=1e-4
)


def project(x, encoder=backbone, projection=head):
    return F.normalize(projection(encoder(x)), dim=1)


def drop(perm):
    """(N, N) bool: each mix's own two sources, which are not its negatives."""
    columns = torch.arange(len(perm), device=perm.device)
    return (columns[None] == columns[:, None]) | (columns[None] == perm[:, None])


step = 0
for epoch in range(args.epochs):
    for (x0, x1), _, _ in loader:
        x0, x1 = x0.to(device), x1.to(device)
        update_momentum(backbone, backbone_ema, 0.99)
        update_momentum(head, head_ema, 0.99)
        z1 = project(x1)
        loss_simclr = criterion(project(x0), z1)
        keys = z1.detach()  # positives and negatives of the mixup terms
        with torch.no_grad():
            z = backbone_ema.forward_stage3(x0)  # stage-3 maps for the Mix Block
        n = x0.shape[0]
        perm, lam = torch.randperm(n, device=device), sample_lambda(n).to(device)
        x_mix, _, lam_eff = mix_block.backbone_sample(x0, x0[perm], z, z[perm], lam)
        loss_mix = mixup_info_nce(project(x_mix), keys, keys[perm], keys, lam_eff, t, drop(perm))

        perm2, lam2 = torch.randperm(n, device=device), sample_lambda(n).to(device)
        x_mb, _, loss_mask = mix_block.block_sample(x0, x0[perm2], z, z[perm2], lam2)
        backbone_ema.eval(), head_ema.eval()
        q_mb = project(x_mb, backbone_ema, head_ema)
        backbone_ema.train(), head_ema.train()
        loss_block = (
            mixup_info_nce(q_mb, keys, keys[perm2], keys, lam2, t, drop(perm2))
            + mixup_bce(q_mb, keys, keys[perm2], lam2, t)
            + loss_mask
        )
        loss = loss_simclr + loss_mix + loss_block
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        print(
            f"epoch {epoch} step {step}: loss {loss.item():.3f} (simclr {loss_simclr.item():.3f})"
        )
        if args.max_steps and step >= args.max_steps:
            break
    if args.max_steps and step >= args.max_steps:
        break
torch.save(backbone.state_dict(), "amix_simclr_backbone.pt")
print("saved amix_simclr_backbone.pt")

# AMix-I in a plain PyTorch loop, from Lightly's parts and lightly-amix's learned mixup.
#
# MoCo v2 (Lightly's projection head, memory bank, momentum update and transform) plus a Mix
# Block+ that learns to mix the query views (AMix, ICLR 2022 submission, §3): the backbone
# learns from MoCo's InfoNCE and the mixup InfoNCE of the Mix Block's (detached, λ-adjusted)
# mixes; the Mix Block learns through the frozen momentum encoder from the mixup InfoNCE + BCE
# of its own mixes and the mask loss.
#
#   python examples/pytorch/amix_i.py --data path/to/images --epochs 10
#
# The recipes (recipes/pretrain_stl10.py) add what a long run needs: checkpoints and exact
# resume, DDP, mixed precision, evaluation and the paper's settings.
import argparse
import copy

import torch
import torch.nn.functional as F
from lightly.data import LightlyDataset
from lightly.models.modules import MoCoProjectionHead
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import MoCoV2Transform
from lightly.utils.scheduler import cosine_schedule

from lightly_amix import LearnedMixup, MixBlockConfig, ResNetBackbone, sample_lambda
from lightly_amix.losses import info_nce, mixup_bce, mixup_info_nce

parser = argparse.ArgumentParser(description="AMix-I pre-training on a folder of images.")
parser.add_argument("--data", required=True, help="a folder of images (subfolders are fine)")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: all)")
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--input-size", type=int, default=96)
parser.add_argument("--queue-size", type=int, default=4096)
args = parser.parse_args()
device = "cuda" if torch.cuda.is_available() else "cpu"
temperature = 0.2

# The online and momentum encoders: a ResNet-18 with access to its stage-3 maps.
backbone = ResNetBackbone("resnet18")
head = MoCoProjectionHead(backbone.out_dim, 2048, 128)
backbone_m, head_m = copy.deepcopy(backbone), copy.deepcopy(head)
deactivate_requires_grad(backbone_m)
deactivate_requires_grad(head_m)
mix_block = LearnedMixup(backbone.stage3_dim, MixBlockConfig())  # Mix Block+
queue = MemoryBankModule(size=(args.queue_size, 128), feature_dim_first=False)  # (K, 128)
for module in (backbone, head, backbone_m, head_m, mix_block, queue):
    module.to(device)

dataset = LightlyDataset(args.data, transform=MoCoV2Transform(input_size=args.input_size))
loader = torch.utils.data.DataLoader(
    dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=2
)
params = [*backbone.parameters(), *head.parameters(), *mix_block.parameters()]
optimizer = torch.optim.SGD(
    params, lr=0.03 * args.batch_size / 256, momentum=0.9, weight_decay=1e-4
)
total = args.epochs * len(loader)


def encode(images, encoder, projection):
    """L2-normalised projection (N, 128)."""
    return F.normalize(projection(encoder(images)), dim=1)


step = 0
for epoch in range(args.epochs):
    for (x_q, x_k), _, _ in loader:
        x_q, x_k = x_q.to(device), x_k.to(device)
        m = cosine_schedule(step, total, 0.999, 1.0)
        update_momentum(backbone, backbone_m, m)
        update_momentum(head, head_m, m)

        features, stage3 = backbone.forward_with_stage3(x_q)
        q = F.normalize(head(features), dim=1)  # (N, 128)
        with torch.no_grad():
            k = encode(x_k, backbone_m, head_m)  # (N, 128)
            z = backbone_m.forward_stage3(x_q)  # the momentum encoder's stage-3 maps
        _, negatives = queue(k, update=True)  # (K, 128): the queue before this step
        loss_moco = info_nce(q, k, negatives, temperature)  # MoCo's InfoNCE against the queue

        # The backbone's sample: the Mix Block's mask without gradient, λ-adjusted.
        n = x_q.shape[0]
        perm, lam = torch.randperm(n, device=device), sample_lambda(n, 2.0).to(device)
        x_mix, _, lam_eff = mix_block.backbone_sample(x_q, x_q[perm], z, z[perm], lam)
        q_mix = encode(x_mix, backbone, head)
        loss_mix = mixup_info_nce(q_mix, k, k[perm], negatives, lam_eff, temperature)

        # The Mix Block's sample: own partners and λ, learned through the frozen momentum encoder.
        perm2, lam2 = torch.randperm(n, device=device), sample_lambda(n, 2.0).to(device)
        x_mb, _, loss_mask = mix_block.block_sample(x_q, x_q[perm2], z, z[perm2], lam2)
        backbone_m.eval(), head_m.eval()
        q_mb = encode(x_mb, backbone_m, head_m)
        backbone_m.train(), head_m.train()
        loss_block = (
            mixup_info_nce(q_mb, k, k[perm2], negatives, lam2, temperature)
            + mixup_bce(q_mb, k, k[perm2], lam2, temperature)
            + loss_mask
        )

        loss = loss_moco + loss_mix + loss_block
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        print(
            f"epoch {epoch} step {step}: loss {loss.item():.3f} (moco {loss_moco.item():.3f}, "
            f"mix {loss_mix.item():.3f}, block {loss_block.item():.3f})"
        )
        if args.max_steps and step >= args.max_steps:
            break
    if args.max_steps and step >= args.max_steps:
        break
torch.save(backbone.state_dict(), "amix_i_backbone.pt")
print("saved amix_i_backbone.pt")

# AMix for BYOL in a plain PyTorch loop: a learned mixup without negatives.
#
# BYOL (Lightly's heads, NegativeCosineSimilarity, momentum update and transform) plus a Mix
# Block+ (AMix, §3): the first views mixed by the Mix Block's detached, λ-adjusted mask predict
# the λ-weighted pair of the sources' target projections (as Un-Mix does for BYOL); the Mix
# Block learns through the frozen target network from the two-positive BCE and the mask loss.
#
#   python examples/pytorch/amix_byol.py --data path/to/images --epochs 10
import argparse
import copy

import torch
import torch.nn.functional as F
from lightly.data import LightlyDataset
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform
from lightly.utils.scheduler import cosine_schedule

from lightly_amix import LearnedMixup, MixBlockConfig, ResNetBackbone, sample_lambda
from lightly_amix.losses import mixup_bce

parser = argparse.ArgumentParser(description="AMix-BYOL pre-training on a folder of images.")
parser.add_argument("--data", required=True, help="a folder of images")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: all)")
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--input-size", type=int, default=96)
parser.add_argument("--queue-size", type=int, default=0, help="unused (no queue)")
args = parser.parse_args()
device = "cuda" if torch.cuda.is_available() else "cpu"

backbone = ResNetBackbone("resnet18")
projection = BYOLProjectionHead(backbone.out_dim, 1024, 256)
prediction = BYOLPredictionHead(256, 1024, 256)
backbone_t, projection_t = copy.deepcopy(backbone), copy.deepcopy(projection)
deactivate_requires_grad(backbone_t)
deactivate_requires_grad(projection_t)
mix_block = LearnedMixup(backbone.stage3_dim, MixBlockConfig())  # Mix Block+
criterion = NegativeCosineSimilarity()
for module in (backbone, projection, prediction, backbone_t, projection_t, mix_block):
    module.to(device)
size = args.input_size
transform = BYOLTransform(BYOLView1Transform(input_size=size), BYOLView2Transform(input_size=size))
dataset = LightlyDataset(args.data, transform=transform)
loader = torch.utils.data.DataLoader(
    dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=2
)
modules = (backbone, projection, prediction, mix_block)
params = [p for module in modules for p in module.parameters()]
optimizer = torch.optim.SGD(
    params, lr=0.06 * args.batch_size / 256, momentum=0.9, weight_decay=1e-4
)
total = args.epochs * len(loader)


def predict(x):
    return prediction(projection(backbone(x)))


step = 0
for epoch in range(args.epochs):
    for (x0, x1), _, _ in loader:
        x0, x1 = x0.to(device), x1.to(device)
        m = cosine_schedule(step, total, 0.99, 1.0)
        update_momentum(backbone, backbone_t, m)
        update_momentum(projection, projection_t, m)
        with torch.no_grad():
            t0, t1 = projection_t(backbone_t(x0)), projection_t(backbone_t(x1))
            z = backbone_t.forward_stage3(x0)  # stage-3 maps for the Mix Block
        loss_byol = 0.5 * (criterion(predict(x0), t1) + criterion(predict(x1), t0))

        n = x0.shape[0]
        perm, lam = torch.randperm(n, device=device), sample_lambda(n).to(device)
        x_mix, _, lam_eff = mix_block.backbone_sample(x0, x0[perm], z, z[perm], lam)
        p_mix = predict(x_mix)
        cos_i = F.cosine_similarity(p_mix, t1, dim=1)
        cos_j = F.cosine_similarity(p_mix, t1[perm], dim=1)
        loss_mix = -(lam_eff * cos_i + (1 - lam_eff) * cos_j).mean()

        perm2, lam2 = torch.randperm(n, device=device), sample_lambda(n).to(device)
        x_mb, _, loss_mask = mix_block.block_sample(x0, x0[perm2], z, z[perm2], lam2)
        backbone_t.eval(), projection_t.eval()
        q_mb = F.normalize(projection_t(backbone_t(x_mb)), dim=1)
        backbone_t.train(), projection_t.train()
        keys = F.normalize(t1, dim=1)
        loss_block = mixup_bce(q_mb, keys, keys[perm2], lam2, 0.2) + loss_mask

        loss = loss_byol + loss_mix + loss_block
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        print(f"epoch {epoch} step {step}: loss {loss.item():.3f} (byol {loss_byol.item():.3f})")
        if args.max_steps and step >= args.max_steps:
            break
    if args.max_steps and step >= args.max_steps:
        break
torch.save(backbone.state_dict(), "amix_byol_backbone.pt")
print("saved amix_byol_backbone.pt")

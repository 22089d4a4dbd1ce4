# AMix for BYOL as a small LightningModule: a learned mixup without negatives.
#
# BYOL (Lightly's projection and prediction heads, NegativeCosineSimilarity, momentum update)
# plus a Mix Block+ (AMix, §3): the first views mixed by the Mix Block's detached, λ-adjusted
# mask predict the λ-weighted pair of the sources' target projections (as Un-Mix does for
# BYOL); the Mix Block learns through the frozen target network from the two-positive BCE of
# its own mixes and the mask loss.
#
#   python examples/pytorch_lightning/amix_byol.py --data path/to/images --epochs 10
#
# lightly_amix.AMixBYOL is the full method behind `recipes/pretrain_stl10.py --method amix-byol`.
import argparse
import copy

import pytorch_lightning as pl
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


class AMixBYOL(pl.LightningModule):
    def __init__(self, lr: float = 0.06, temperature: float = 0.2):
        super().__init__()
        self.backbone = ResNetBackbone("resnet18")
        self.projection = BYOLProjectionHead(self.backbone.out_dim, 1024, 256)
        self.prediction = BYOLPredictionHead(256, 1024, 256)
        self.backbone_t, self.projection_t = (
            copy.deepcopy(self.backbone),
            copy.deepcopy(self.projection),
        )
        deactivate_requires_grad(self.backbone_t)
        deactivate_requires_grad(self.projection_t)
        self.mix_block = LearnedMixup(self.backbone.stage3_dim, MixBlockConfig())
        self.criterion = NegativeCosineSimilarity()
        self.lr, self.t = lr, temperature

    def predict(self, x):
        return self.prediction(self.projection(self.backbone(x)))

    def training_step(self, batch, batch_idx):
        (x0, x1), _, _ = batch
        m = cosine_schedule(self.global_step, self.trainer.estimated_stepping_batches, 0.99, 1.0)
        update_momentum(self.backbone, self.backbone_t, m)
        update_momentum(self.projection, self.projection_t, m)
        with torch.no_grad():
            t0 = self.projection_t(self.backbone_t(x0))
            t1 = self.projection_t(self.backbone_t(x1))
            z = self.backbone_t.forward_stage3(x0)  # stage-3 maps for the Mix Block
        loss_byol = 0.5 * (
            self.criterion(self.predict(x0), t1) + self.criterion(self.predict(x1), t0)
        )

        n = x0.shape[0]
        perm, lam = torch.randperm(n, device=self.device), sample_lambda(n).to(self.device)
        x_mix, _, lam_eff = self.mix_block.backbone_sample(x0, x0[perm], z, z[perm], lam)
        p_mix = self.predict(x_mix)
        cos_i = F.cosine_similarity(p_mix, t1, dim=1)
        cos_j = F.cosine_similarity(p_mix, t1[perm], dim=1)
        loss_mix = -(lam_eff * cos_i + (1 - lam_eff) * cos_j).mean()

        perm2, lam2 = torch.randperm(n, device=self.device), sample_lambda(n).to(self.device)
        x_mb, _, loss_mask = self.mix_block.block_sample(x0, x0[perm2], z, z[perm2], lam2)
        self.backbone_t.eval(), self.projection_t.eval()
        q_mb = F.normalize(self.projection_t(self.backbone_t(x_mb)), dim=1)
        self.backbone_t.train(), self.projection_t.train()
        keys = F.normalize(t1, dim=1)
        loss_block = mixup_bce(q_mb, keys, keys[perm2], lam2, self.t) + loss_mask

        loss = loss_byol + loss_mix + loss_block
        self.log_dict({"loss": loss, "loss_byol": loss_byol, "loss_mix": loss_mix}, prog_bar=True)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=1e-4)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="AMix-BYOL pre-training on a folder of images.")
    parser.add_argument("--data", required=True, help="a folder of images")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--queue-size", type=int, default=0, help="unused (no queue)")
    args = parser.parse_args()
    size = args.input_size
    transform = BYOLTransform(
        BYOLView1Transform(input_size=size), BYOLView2Transform(input_size=size)
    )
    dataset = LightlyDataset(args.data, transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=2
    )
    model = AMixBYOL(lr=0.06 * args.batch_size / 256)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        max_steps=args.max_steps,
        devices=1,
        accelerator="auto",
        logger=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, loader)
    torch.save(model.backbone.state_dict(), "amix_byol_backbone.pt")
    print("saved amix_byol_backbone.pt")

# AMix for SimCLR as a small LightningModule: a learned mixup with in-batch negatives.
#
# SimCLR (Lightly's projection head and NTXentLoss) plus a Mix Block+ (AMix, §3): the backbone
# also learns from the mixup InfoNCE of the first views mixed by the Mix Block's detached,
# λ-adjusted mask (positives: both sources' second views; negatives: the other images' second
# views); the Mix Block learns through a frozen EMA copy of the encoder from the mixup InfoNCE +
# BCE of its own mixes and the mask loss.
#
#   python examples/pytorch_lightning/amix_simclr.py --data path/to/images --epochs 10
#
# lightly_amix.AMixSimCLR is the full method behind `recipes/pretrain_stl10.py --method
# amix-simclr` (DDP, exact resume, evaluation).
import argparse
import copy

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightly.data import LightlyDataset
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import SimCLRTransform

from lightly_amix import LearnedMixup, MixBlockConfig, ResNetBackbone, sample_lambda
from lightly_amix.losses import mixup_bce, mixup_info_nce


class AMixSimCLR(pl.LightningModule):
    def __init__(self, temperature: float = 0.5, lr: float = 0.06):
        super().__init__()
        self.backbone = ResNetBackbone("resnet18")
        self.head = SimCLRProjectionHead(self.backbone.out_dim, 512, 128)
        self.backbone_ema, self.head_ema = copy.deepcopy(self.backbone), copy.deepcopy(self.head)
        deactivate_requires_grad(self.backbone_ema)
        deactivate_requires_grad(self.head_ema)
        self.mix_block = LearnedMixup(self.backbone.stage3_dim, MixBlockConfig())
        self.criterion = NTXentLoss(temperature=temperature)
        self.t, self.lr = temperature, lr

    def training_step(self, batch, batch_idx):
        (x0, x1), _, _ = batch
        update_momentum(self.backbone, self.backbone_ema, 0.99)
        update_momentum(self.head, self.head_ema, 0.99)
        z0 = F.normalize(self.head(self.backbone(x0)), dim=1)
        z1 = F.normalize(self.head(self.backbone(x1)), dim=1)
        loss_simclr = self.criterion(z0, z1)
        keys = z1.detach()  # positives and negatives of the mixup terms
        with torch.no_grad():
            z = self.backbone_ema.forward_stage3(x0)  # stage-3 maps for the Mix Block
        n = x0.shape[0]
        columns = torch.arange(n, device=self.device)

        def drop(perm):  # each mix's own two sources are not negatives
            return (columns[None] == columns[:, None]) | (columns[None] == perm[:, None])

        perm, lam = torch.randperm(n, device=self.device), sample_lambda(n).to(self.device)
        x_mix, _, lam_eff = self.mix_block.backbone_sample(x0, x0[perm], z, z[perm], lam)
        q_mix = F.normalize(self.head(self.backbone(x_mix)), dim=1)
        loss_mix = mixup_info_nce(q_mix, keys, keys[perm], keys, lam_eff, self.t, drop(perm))

        perm2, lam2 = torch.randperm(n, device=self.device), sample_lambda(n).to(self.device)
        x_mb, _, loss_mask = self.mix_block.block_sample(x0, x0[perm2], z, z[perm2], lam2)
        self.backbone_ema.eval(), self.head_ema.eval()
        q_mb = F.normalize(self.head_ema(self.backbone_ema(x_mb)), dim=1)
        self.backbone_ema.train(), self.head_ema.train()
        loss_block = (
            mixup_info_nce(q_mb, keys, keys[perm2], keys, lam2, self.t, drop(perm2))
            + mixup_bce(q_mb, keys, keys[perm2], lam2, self.t)
            + loss_mask
        )
        loss = loss_simclr + loss_mix + loss_block
        self.log_dict({"loss": loss, "loss_simclr": loss_simclr, "loss_mix": loss_mix},
                      prog_bar=True)  # fmt: skip
        return loss

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=1e-4)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="AMix-SimCLR pre-training on a folder of images.")
    parser.add_argument("--data", required=True, help="a folder of images")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--queue-size", type=int, default=0, help="unused (no queue)")
    args = parser.parse_args()
    dataset = LightlyDataset(args.data, transform=SimCLRTransform(input_size=args.input_size))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=2
    )
    model = AMixSimCLR(lr=0.06 * args.batch_size / 256)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        max_steps=args.max_steps,
        devices=1,
        accelerator="auto",
        logger=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, loader)
    torch.save(model.backbone.state_dict(), "amix_simclr_backbone.pt")
    print("saved amix_simclr_backbone.pt")

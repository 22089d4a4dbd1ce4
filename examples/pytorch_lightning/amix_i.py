# AMix-I as a small LightningModule, from Lightly's parts and lightly-amix's learned mixup.
#
# MoCo v2 (Lightly's projection head, memory bank, momentum update and transform) plus a Mix
# Block+ that learns to mix the query views (AMix, ICLR 2022 submission, §3). Each step: MoCo's
# InfoNCE; the mixup InfoNCE of the Mix Block's detached, λ-adjusted mixes (trains the
# backbone); the mixup InfoNCE + BCE of the Mix Block's own mixes through the frozen momentum
# encoder, plus the mask loss (trains the Mix Block only).
#
#   python examples/pytorch_lightning/amix_i.py --data path/to/images --epochs 10
#
# lightly_amix.AMix is the full method (AMix-C, ablation switches, DDP, exact resume);
# recipes/pretrain_stl10.py runs it with the paper's settings.
import argparse
import copy

import pytorch_lightning as pl
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


class AMixI(pl.LightningModule):
    def __init__(self, queue_size: int = 4096, temperature: float = 0.2, lr: float = 0.03):
        super().__init__()
        self.backbone = ResNetBackbone("resnet18")
        self.head = MoCoProjectionHead(self.backbone.out_dim, 2048, 128)
        self.backbone_m, self.head_m = copy.deepcopy(self.backbone), copy.deepcopy(self.head)
        deactivate_requires_grad(self.backbone_m)
        deactivate_requires_grad(self.head_m)
        self.mix_block = LearnedMixup(self.backbone.stage3_dim, MixBlockConfig())  # Mix Block+
        self.queue = MemoryBankModule(size=(queue_size, 128), feature_dim_first=False)
        self.t, self.lr = temperature, lr

    def encode(self, images, momentum=False):
        encoder, head = (self.backbone_m, self.head_m) if momentum else (self.backbone, self.head)
        return F.normalize(head(encoder(images)), dim=1)  # (N, 128)

    def training_step(self, batch, batch_idx):
        (x_q, x_k), _, _ = batch
        m = cosine_schedule(self.global_step, self.trainer.estimated_stepping_batches, 0.999, 1.0)
        update_momentum(self.backbone, self.backbone_m, m)
        update_momentum(self.head, self.head_m, m)
        features, _ = self.backbone.forward_with_stage3(x_q)
        q = F.normalize(self.head(features), dim=1)
        with torch.no_grad():
            k = self.encode(x_k, momentum=True)
            z = self.backbone_m.forward_stage3(x_q)  # stage-3 maps for the Mix Block
        _, negatives = self.queue(k, update=True)  # (K, 128), before this step's keys
        loss_moco = info_nce(q, k, negatives, self.t)

        n = x_q.shape[0]
        perm, lam = torch.randperm(n, device=self.device), sample_lambda(n).to(self.device)
        x_mix, _, lam_eff = self.mix_block.backbone_sample(x_q, x_q[perm], z, z[perm], lam)
        q_mix = self.encode(x_mix)
        loss_mix = mixup_info_nce(q_mix, k, k[perm], negatives, lam_eff, self.t)

        perm2, lam2 = torch.randperm(n, device=self.device), sample_lambda(n).to(self.device)
        x_mb, _, loss_mask = self.mix_block.block_sample(x_q, x_q[perm2], z, z[perm2], lam2)
        self.backbone_m.eval(), self.head_m.eval()  # frozen, and its BN statistics untouched
        q_mb = self.encode(x_mb, momentum=True)
        self.backbone_m.train(), self.head_m.train()
        loss_block = (
            mixup_info_nce(q_mb, k, k[perm2], negatives, lam2, self.t)
            + mixup_bce(q_mb, k, k[perm2], lam2, self.t)
            + loss_mask
        )
        loss = loss_moco + loss_mix + loss_block
        self.log_dict(
            {"loss": loss, "loss_moco": loss_moco, "loss_mix": loss_mix, "loss_block": loss_block},
            prog_bar=True,
        )
        return loss

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=1e-4)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="AMix-I pre-training on a folder of images.")
    parser.add_argument("--data", required=True, help="a folder of images")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--queue-size", type=int, default=4096)
    args = parser.parse_args()
    dataset = LightlyDataset(args.data, transform=MoCoV2Transform(input_size=args.input_size))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=2
    )
    model = AMixI(queue_size=args.queue_size, lr=0.03 * args.batch_size / 256)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        max_steps=args.max_steps,
        devices=1,
        accelerator="auto",
        logger=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, loader)
    torch.save(model.backbone.state_dict(), "amix_i_backbone.pt")
    print("saved amix_i_backbone.pt")

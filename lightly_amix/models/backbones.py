"""torchvision ResNets as pre-training backbones, with a stage-3 feature tap.

The Mix Block (AMix, paper §3.2) needs the stage-3 (``layer3``) feature map of the images it
mixes. :class:`ResNetBackbone` returns it from the same forward pass that produces the pooled
features, so no second pass is needed.

Examples:
    >>> backbone = ResNetBackbone("resnet18", cifar_stem=True)
    >>> pooled, stage3 = backbone.forward_with_stage3(torch.randn(2, 3, 64, 64))
    >>> pooled.shape, stage3.shape
    (torch.Size([2, 512]), torch.Size([2, 256, 16, 16]))
"""

from __future__ import annotations

from functools import partial

import torch
import torchvision
from lightly.models.batchnorm import SplitBatchNorm
from torch import Tensor, nn

RESNETS = ("resnet18", "resnet34", "resnet50")


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its classifier.

    The wrapped network is kept as ``self.resnet`` so that :meth:`export_state_dict` is a plain
    torchvision state_dict (without ``fc``) that ``torchvision.models.resnet18()`` loads with
    ``strict=False`` (only ``fc.*`` missing).

    Args:
        name: ``resnet18``, ``resnet34`` or ``resnet50``.
        cifar_stem: Replace the 7x7 stride-2 conv and the max-pool by a 3x3 stride-1 conv and no
            pool, as is usual for inputs of at most 64 px (Tiny-ImageNet, paper §4.2). A model
            exported with this stem must be rebuilt with the same stem to load it.
        zero_init_residual: torchvision's option to zero the last BN of each residual branch.
        bn_splits: Normalise each of this many equal parts of a training batch with its own
            statistics (Lightly's ``SplitBatchNorm``), as BatchNorm does on that many devices
            (0 or 1: plain ``BatchNorm2d``). Part ``g`` holds samples ``g, g + bn_splits, ...``.
            MoCo's shuffled BN needs it on one device, where shuffling alone leaves every
            statistic unchanged. Training batches must divide evenly; evaluation is
            unaffected, and :meth:`export_state_dict` averages the parts' running
            statistics into a plain torchvision state_dict.
        width: Channels of the first stage (torchvision: 64); the later stages have 2, 4 and
            8 times as many. A narrower network (e.g. 16) keeps the ResNet's depth and map
            sizes at a sixteenth of the compute: the mask lab's setting on a CPU. torchvision
            has no width option for ResNet-18/34 (``width_per_group`` is for bottlenecks), so
            the stages are rebuilt with torchvision's own ``_make_layer``; the state_dict keys
            stay torchvision's, the shapes are narrower.

    Attributes:
        out_dim: Width of the pooled features (512 for ResNet-18/34, 2048 for ResNet-50).
        stage3_dim: Channels of the stage-3 map (256 for ResNet-18/34, 1024 for ResNet-50).
    """

    def __init__(
        self,
        name: str = "resnet18",
        cifar_stem: bool = False,
        zero_init_residual: bool = False,
        bn_splits: int = 0,
        width: int = 64,
    ) -> None:
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"Unknown backbone '{name}'. Expected one of: {', '.join(RESNETS)}.")
        if bn_splits < 0:
            raise ValueError(f"bn_splits must be >= 0 (0 or 1: plain BatchNorm), got {bn_splits}.")
        if width < 1:
            raise ValueError(f"width must be >= 1 (torchvision's ResNets: 64), got {width}.")
        norm = partial(SplitBatchNorm, num_splits=bn_splits) if bn_splits > 1 else None
        resnet = getattr(torchvision.models, name)(
            weights=None, zero_init_residual=zero_init_residual, norm_layer=norm
        )
        if width != 64:
            _narrow(resnet, width, zero_init_residual)
        if cifar_stem:
            resnet.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(resnet.conv1.weight, mode="fan_out", nonlinearity="relu")
            resnet.maxpool = nn.Identity()
        self.out_dim: int = resnet.fc.in_features
        self.stage3_dim: int = self.out_dim // 2
        resnet.fc = nn.Identity()
        self.resnet = resnet
        self.name = name
        self.cifar_stem = cifar_stem
        self.bn_splits = bn_splits if bn_splits > 1 else 0
        self.width = width

    def _stem_to_stage3(self, x: Tensor) -> Tensor:
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        return r.layer3(r.layer2(r.layer1(x)))

    def _stage4_to_pooled(self, stage3: Tensor) -> Tensor:
        r = self.resnet
        return torch.flatten(r.avgpool(r.layer4(stage3)), 1)

    def forward_stage3(self, x: Tensor) -> Tensor:
        """Only the stage-3 map (N, stage3_dim, h, w): stem to ``layer3``, no ``layer4``."""
        return self._stem_to_stage3(x)

    def forward(self, x: Tensor) -> Tensor:
        """Returns pooled features of shape (N, out_dim) for images of shape (N, 3, H, W)."""
        return self._stage4_to_pooled(self._stem_to_stage3(x))

    def forward_with_stage3(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns the pooled features (N, out_dim) and the stage-3 map (N, stage3_dim, h, w).

        ``h = H / 16`` with the standard stem and ``H / 4`` with the CIFAR stem.
        """
        stage3 = self._stem_to_stage3(x)
        return self._stage4_to_pooled(stage3), stage3

    def forward_manifold(self, x: Tensor, stage: int, perm: Tensor, lam: Tensor) -> Tensor:
        """Pooled features (N, out_dim) with hidden features mixed before one stage (ManifoldMix).

        ``h ← λ h + (1 − λ) h[perm]`` is applied to the input of ``layer{stage + 1}``:
        ``stage = 0`` mixes the stem's output, ``stage = 3`` the input of ``layer4``.

        Args:
            x: Images (N, 3, H, W); they are not modified.
            stage: 0, 1, 2 or 3.
            perm: Partner of each sample, shape (N,).
            lam: Share of sample ``i``, shape (N,).
        """
        if stage not in (0, 1, 2, 3):
            raise ValueError(f"stage must be 0, 1, 2 or 3, got {stage}.")
        r = self.resnet
        h = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        for index, layer in enumerate((r.layer1, r.layer2, r.layer3, r.layer4)):
            if index == stage:
                h = torch.lerp(h[perm], h, lam.to(h.dtype).view(-1, 1, 1, 1))
            h = layer(h)
        return torch.flatten(r.avgpool(h), 1)

    def export_state_dict(self) -> dict[str, Tensor]:
        """Returns a torchvision-ResNet state_dict without ``fc``, tensors detached on the CPU.

        With ``bn_splits`` the running mean and variance of each BN layer are the average over
        its parts (what ``SplitBatchNorm`` itself uses in evaluation mode), so the result loads
        into a plain torchvision ResNet.
        """
        state = {
            key: value.detach().cpu().clone()
            for key, value in self.resnet.state_dict().items()
            if not key.startswith("fc.")
        }
        return merge_split_bn_statistics(state, self.bn_splits)


def _narrow(resnet: torchvision.models.ResNet, width: int, zero_init_residual: bool) -> None:
    """Rebuilds stem and stages of a torchvision ResNet with ``width`` first-stage channels."""
    block = type(resnet.layer1[0])
    depths = [len(layer) for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)]
    resnet.inplanes = width
    resnet.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    resnet.bn1 = resnet._norm_layer(width)
    for index, depth in enumerate(depths):
        stride = 1 if index == 0 else 2
        layer = resnet._make_layer(block, width * 2**index, depth, stride=stride)
        setattr(resnet, f"layer{index + 1}", layer)
    resnet.fc = nn.Linear(width * 8 * block.expansion, resnet.fc.out_features)
    # torchvision's initialisation, applied again to the rebuilt modules.
    for module in resnet.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
    if zero_init_residual:
        for module in resnet.modules():
            last = getattr(module, "bn3", None) or getattr(module, "bn2", None)
            if (
                isinstance(
                    module,
                    (torchvision.models.resnet.BasicBlock, torchvision.models.resnet.Bottleneck),
                )
                and last is not None
            ):
                nn.init.constant_(last.weight, 0)


def merge_split_bn_statistics(state: dict[str, Tensor], num_splits: int) -> dict[str, Tensor]:
    """Averages the per-part running statistics of split BatchNorm layers in a state_dict.

    Lightly's ``SplitBatchNorm`` keeps ``num_splits`` copies of ``running_mean`` and
    ``running_var`` (shape ``(num_splits * C,)``) and evaluates with their mean; plain
    ``BatchNorm2d`` holds one ``(C,)`` copy. Every ``<layer>.running_mean`` / ``running_var``
    with ``num_splits`` times the size of ``<layer>.weight`` is replaced by that mean; all
    other entries are kept as they are.

    Args:
        state: A state_dict (any key prefix).
        num_splits: ``model.bn_splits`` of the run; 0 or 1 returns a copy of ``state``.

    Examples:
        >>> state = {"bn.weight": torch.ones(2), "bn.running_mean": torch.arange(4.0)}
        >>> merge_split_bn_statistics(state, 2)["bn.running_mean"]
        tensor([1., 2.])
    """
    merged = dict(state)
    if num_splits <= 1:
        return merged
    for key, value in state.items():
        layer, _, stat = key.rpartition(".")
        weight = state.get(f"{layer}.weight")
        if stat in ("running_mean", "running_var") and weight is not None:
            if value.numel() == num_splits * weight.numel():
                # (num_splits * C,) -> (num_splits, C) -> (C,)
                merged[key] = value.view(num_splits, -1).mean(dim=0)
    return merged

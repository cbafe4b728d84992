"""The two networks: the class-conditional diffusion UNet and the diagnostic classifier, both MONAI's own."""

from __future__ import annotations

import torch
from monai.networks.nets import DenseNet, DiffusionModelUNet
from torch import nn

from .config import ClassifierConfig, ModelConfig


class ClassConditionalUNet(nn.Module):
    """MONAI ``DiffusionModelUNet`` fed the class as a one-token cross-attention context.

    The context comes from a learned table with ``num_classes + 1`` rows; the last row is the null class used for
    classifier-free guidance. With ``class_in_time_embedding`` the label also indexes MONAI's own class table that is
    added to the time embedding (a one-token cross-attention alone is only a per-class bias).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        u = config.unet
        self.unet = DiffusionModelUNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=1,
            num_res_blocks=u.num_res_blocks,
            channels=u.channels,
            attention_levels=u.attention_levels,
            norm_num_groups=u.norm_num_groups,
            num_head_channels=u.num_head_channels,
            with_conditioning=True,
            transformer_num_layers=u.transformer_num_layers,
            cross_attention_dim=config.context_dim,
            num_class_embeds=config.num_classes + 1 if config.class_in_time_embedding else None,
            use_flash_attention=u.use_flash_attention,
        )
        self.class_embedding = nn.Embedding(config.num_classes + 1, config.context_dim)

    @property
    def null_class(self) -> int:
        return self.config.null_class

    def labels(self, label: int, batch: int, device=None) -> torch.Tensor:
        """A batch of one label as the long tensor :meth:`forward` takes."""
        return torch.full((batch,), int(label), dtype=torch.long, device=device)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Prediction (v) for noisy volumes ``x`` (B, 1, D, H, W) at integer ``timesteps`` (B,) and ``labels`` (B,),
        where label ``num_classes`` is the null class."""
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(f"expected a batch of one-channel volumes (B, 1, D, H, W), got shape {tuple(x.shape)}")
        if labels.dtype != torch.long or labels.shape != (x.shape[0],):
            raise ValueError(
                f"labels must be a long tensor of shape ({x.shape[0]},), got {labels.dtype} {tuple(labels.shape)}"
            )
        if int(labels.min()) < 0 or int(labels.max()) > self.null_class:
            raise ValueError(
                f"labels must lie in [0, {self.null_class}] (the last is the null class), got {labels.tolist()}"
            )
        return self.unet(x, timesteps, **self._conditioning(labels, x.dtype))

    def conditioning(self, label: int, batch: int, device=None) -> dict[str, torch.Tensor | None]:
        """The UNet's conditioning arguments for a batch of one label, made once and reused every step (the guided
        step calls ``self.unet(x, t, **conditioning)``; its memory trace cannot run :meth:`forward`'s checks)."""
        return self._conditioning(self.labels(label, batch, device), self.class_embedding.weight.dtype)

    def _conditioning(self, labels: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor | None]:
        context = self.class_embedding(labels)[:, None, :].to(dtype)
        return {"context": context, "class_labels": labels if self.config.class_in_time_embedding else None}


def build_classifier(config: ClassifierConfig) -> DenseNet:
    """MONAI 3D DenseNet (DenseNet-121 layout at the default width) giving one logit per class."""
    return DenseNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=len(config.class_names),
        init_features=config.init_features,
        growth_rate=config.growth_rate,
        block_config=config.block_config,
        dropout_prob=config.dropout_prob,
        norm=("group", {"num_groups": 1}) if config.norm == "group" else "batch",  # one group: any width
    )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

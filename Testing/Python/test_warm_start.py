"""Warm starts: a network grown by a finer outer level carries every stored tensor into its inner levels, starts its
new level as a pass-through, and a warm-started run resumes exactly."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file

from ControlCGLib.model.checkpoints import CheckpointError, save_checkpoint
from ControlCGLib.model.classifier import VolumeClassifier, grid_factors
from ControlCGLib.model.config import ClassifierConfig, UNetConfig, preset
from ControlCGLib.model.networks import ClassConditionalUNet, build_classifier
from ControlCGLib.model.warm_start import WarmStartError, outer_levels, warm_start
from ControlCGLib.resources import diffusion_dir
from ControlCGLib.training.diffusion_trainer import TrainConfig, train_diffusion


def _grown(stored_cfg, channels=(8, 8, 8, 16), attention=(False, False, True, True)):
    unet = UNetConfig(channels=channels, attention_levels=attention, norm_num_groups=4, num_head_channels=4)
    return stored_cfg.replace(grid=tuple(2 * g for g in stored_cfg.grid), unet=unet)


def _stored(folder):
    """A tiny model with weights unlike a fresh network's (every tensor moved), saved as a model folder."""
    cfg = tiny_config()
    torch.manual_seed(0)
    model = ClassConditionalUNet(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(model, cfg, folder)
    return cfg, model


def test_an_outer_level_carries_every_stored_tensor_and_starts_as_a_pass_through(tmp_path):
    cfg, stored = _stored(tmp_path / "stored")
    grown = ClassConditionalUNet(_grown(cfg))
    new = warm_start(grown, tmp_path / "stored")
    state = grown.state_dict()
    for key, value in stored.state_dict().items():
        parts = key.split(".")
        if key.startswith("unet.down_blocks."):  # down block i is the grown network's i + 1; the rest keep their names
            parts[2] = str(int(parts[2]) + 1)
        moved = ".".join(parts)
        assert torch.equal(state[moved], value), moved
    assert new and all(
        k.startswith(("unet.down_blocks.0.", "unet.up_blocks.3.", "unet.up_blocks.2.upsampler.")) for k in new
    )

    unet = grown.unet.eval()
    h = torch.randn(1, 8, 16, 16, 16)
    emb = torch.randn(1, unet.time_embed[0].out_features)
    with torch.no_grad():
        down, skips = unet.down_blocks[0](hidden_states=h, temb=emb)
        assert torch.equal(down, h[:, :, ::2, ::2, ::2])  # the 2x2x2 block's centre voxel: the per-voxel noise kept
        assert torch.equal(skips[0], h)
        coarse = torch.randn(1, 8, 8, 8, 8)
        up = unet.up_blocks[2].upsampler(coarse, emb)
        assert torch.equal(up, coarse.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4))
        out = unet.up_blocks[3](
            hidden_states=h, res_hidden_states_list=[torch.randn_like(h), torch.randn_like(h)], temb=emb
        )
        assert torch.allclose(out, h, atol=1e-6)  # the skipped fine features are not read until trained


def test_the_cpu_model_starts_the_2mm_preset():
    grown = ClassConditionalUNet(preset("cpu-2mm"))
    new = warm_start(grown, diffusion_dir())
    stored = load_file(str(diffusion_dir() / "weights.safetensors"))
    carried = sum(v.numel() for v in stored.values())
    assert carried == sum(v.numel() for k, v in grown.state_dict().items() if k not in new)
    assert outer_levels(preset("cpu"), preset("cpu-2mm")) == 1
    assert preset("cpu-2mm").grid == (80, 96, 80)


@pytest.mark.parametrize(
    "channels, attention, grid, message",
    [
        ((8, 8, 32, 16), (False, False, True, True), (16, 16, 16), "are not the inner levels"),
        ((4, 8, 8, 16), (False, False, True, True), (16, 16, 16), "must keep 8 channels"),
        ((8, 8, 8, 16), (False, False, False, True), (16, 16, 16), "drops the stored self-attention"),
        ((8, 8, 8, 16), (False, False, True, True), (24, 24, 24), "need the grid"),
    ],
)
def test_a_network_that_does_not_contain_the_stored_one_is_refused(tmp_path, channels, attention, grid, message):
    cfg, _ = _stored(tmp_path / "stored")
    unet = UNetConfig(channels=channels, attention_levels=attention, norm_num_groups=4, num_head_channels=4)
    grown = cfg.replace(grid=grid, unet=unet)
    with pytest.raises(WarmStartError, match=message):
        warm_start(ClassConditionalUNet(grown), tmp_path / "stored")


def test_a_classifier_folder_or_corrupt_weights_are_refused(tmp_path):
    ccfg = ClassifierConfig(grid=(8, 8, 8), init_features=4, growth_rate=4, block_config=(1, 1))
    save_checkpoint(build_classifier(ccfg), ccfg, tmp_path / "clf")
    grown = ClassConditionalUNet(_grown(tiny_config()))
    with pytest.raises(CheckpointError, match="classifier"):
        warm_start(grown, tmp_path / "clf")
    _stored(tmp_path / "stored")
    (tmp_path / "stored" / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        warm_start(grown, tmp_path / "stored")


class _Data:
    def __init__(self, grid, n=4, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.items = [(torch.rand(1, *grid, generator=g) * 2 - 1, i % 2) for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_a_warm_started_run_resumes_exactly_and_scores_its_held_out_subjects(tmp_path):
    cfg, _ = _stored(tmp_path / "stored")
    grown = _grown(cfg)
    data, held_out = _Data(grown.grid), _Data(grown.grid, n=3, seed=1)
    fast = {"batch_size": 2, "lr": 1e-3, "precision": "no", "checkpoint_every": 2}
    kwargs = {"init_from": tmp_path / "stored", "held_out": held_out}
    train_diffusion(grown, data, tmp_path / "straight", TrainConfig(steps=4, **fast), **kwargs)
    train_diffusion(grown, data, tmp_path / "resumed", TrainConfig(steps=2, **fast), **kwargs)
    train_diffusion(grown, data, tmp_path / "resumed", TrainConfig(steps=4, **fast), **kwargs)
    for name in ("model", "ema"):
        a = load_file(str(tmp_path / "straight" / "state" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "resumed" / "state" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = {run: list(csv.DictReader(open(tmp_path / run / "held_out.csv"))) for run in ("straight", "resumed")}
    assert [int(r["step"]) for r in rows["resumed"]] == [0, 2, 4]
    assert rows["straight"] == rows["resumed"]  # the same draws every checkpoint, across sittings


def test_a_classifier_reads_a_finer_model_grid_by_block_means():
    ccfg = ClassifierConfig(grid=(8, 12, 8), init_features=4, growth_rate=4, block_config=(1, 1), norm="group")
    torch.manual_seed(0)
    model = build_classifier(ccfg)
    model.config = ccfg
    asked = VolumeClassifier(model)
    fine = torch.rand(16, 24, 16).numpy()
    coarse = fine.reshape(8, 2, 12, 2, 8, 2).mean(axis=(1, 3, 5))
    assert asked.verdict(fine) == pytest.approx(asked.verdict(coarse), abs=1e-6)
    assert grid_factors((80, 96, 80), (40, 48, 40)) == (2, 2, 2)
    with pytest.raises(ValueError, match="whole coarsening"):
        asked.verdict(torch.rand(12, 24, 16).numpy())

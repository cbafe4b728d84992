import json
import pickle
from datetime import datetime

import pytest
import torch
from safetensors.torch import save_file

from ControlCGLib import __version__
from ControlCGLib.model.checkpoints import (
    WEIGHTS,
    CheckpointError,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from ControlCGLib.model.config import CLASSIFIER_PRESETS, CONFIG_FILE, FORMAT_VERSION
from ControlCGLib.model.networks import build_classifier


def test_round_trip_gives_identical_outputs(tmp_path, tiny_model, tiny_input):
    save_checkpoint(tiny_model, tiny_model.config, tmp_path / "m", provenance={"steps": 3})
    loaded = load_checkpoint(tmp_path / "m")
    x, t, lab = tiny_input[None, None], torch.tensor([10]), torch.tensor([1])
    assert loaded.config == tiny_model.config
    assert torch.equal(loaded(x, t, lab), tiny_model(x, t, lab))
    provenance = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())["provenance"]
    assert provenance["steps"] == 3 and provenance["code_version"] == __version__
    assert datetime.fromisoformat(provenance["saved"]).tzinfo is not None
    assert read_checkpoint_config(tmp_path / "m") == (tiny_model.config, provenance)


def test_classifier_round_trip(tmp_path):
    cfg = CLASSIFIER_PRESETS["cpu"].__class__(grid=(16, 16, 16), init_features=4, growth_rate=4, block_config=(1, 1))
    net = build_classifier(cfg).eval()
    save_checkpoint(net, cfg, tmp_path / "c")
    x = torch.randn(1, 1, 16, 16, 16)
    assert torch.equal(load_checkpoint(tmp_path / "c")(x), net(x))


def _saved(tmp_path, model):
    folder = save_checkpoint(model, model.config, tmp_path / "m")
    return folder, {k: v.clone() for k, v in model.state_dict().items()}


def test_missing_extra_and_wrong_shape_tensors(tmp_path, tiny_model):
    folder, state = _saved(tmp_path, tiny_model)
    key = next(iter(state))
    save_file({k: v for k, v in state.items() if k != key}, str(folder / WEIGHTS))
    with pytest.raises(CheckpointError, match="1 missing"):
        load_checkpoint(folder)
    save_file({**state, "extra.weight": torch.zeros(1)}, str(folder / WEIGHTS))
    with pytest.raises(CheckpointError, match="1 unexpected"):
        load_checkpoint(folder)
    save_file({**state, "class_embedding.weight": torch.zeros(5, 5)}, str(folder / WEIGHTS))
    with pytest.raises(CheckpointError, match="wrong shapes.*class_embedding"):
        load_checkpoint(folder)


def test_corrupt_and_missing_files(tmp_path, tiny_model):
    folder, _ = _saved(tmp_path, tiny_model)
    (folder / WEIGHTS).write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(folder)
    (folder / WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(folder)
    with pytest.raises(CheckpointError, match="not a ControlCG model folder"):
        load_checkpoint(tmp_path / "nowhere")


def test_newer_format_is_refused(tmp_path, tiny_model):
    folder, _ = _saved(tmp_path, tiny_model)
    data = json.loads((folder / CONFIG_FILE).read_text())
    data["format_version"] = FORMAT_VERSION + 1
    (folder / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(folder)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_is_never_executed(tmp_path, tiny_model):
    folder, _ = _saved(tmp_path, tiny_model)
    marker = tmp_path / "pwned"
    (folder / WEIGHTS).write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(CheckpointError):
        load_checkpoint(folder)
    assert not marker.exists()

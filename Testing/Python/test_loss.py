import torch

from ControlCGLib.sampling.noise import make_generator
from ControlCGLib.sampling.schedule import Schedule
from ControlCGLib.training.loss import diffusion_loss, drop_labels


def test_loss_is_finite_and_trains(tiny_model):
    x0 = torch.rand(2, 1, 8, 8, 8) * 2 - 1
    labels = torch.tensor([0, 1])
    tiny_model.train()
    loss = diffusion_loss(tiny_model, x0, labels, generator=make_generator(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert tiny_model.class_embedding.weight.grad is not None
    again = diffusion_loss(tiny_model, x0, labels, generator=make_generator(0))
    assert torch.equal(loss.detach(), again.detach())  # seeded


def test_label_dropout():
    g = make_generator(0)
    labels = torch.zeros(10_000, dtype=torch.long)
    dropped = drop_labels(labels, null_class=2, p_uncond=0.2, generator=g)
    share = float((dropped == 2).float().mean())
    assert 0.18 < share < 0.22
    assert set(dropped.tolist()) == {0, 2}
    assert torch.equal(drop_labels(labels, 2, 0.0, g), labels)


class _Oracle(torch.nn.Module):
    """Predicts the true v from the recorded x0 and noise: the loss must then be ~0."""

    def __init__(self, config, schedule):
        super().__init__()
        self.config, self.schedule, self.seen = config, schedule, []
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x_t, t, labels):
        self.seen.append(labels.clone())
        x0 = self.x0
        a = self.schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1, 1)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * x0 + 0 * self.p


def test_target_is_v_and_dropout_reaches_the_model(tiny_model):
    cfg = tiny_model.config
    oracle = _Oracle(cfg, Schedule(cfg.schedule))
    oracle.x0 = torch.rand(64, 1, 8, 8, 8)
    loss = diffusion_loss(
        oracle, oracle.x0, torch.zeros(64, dtype=torch.long), generator=make_generator(1), p_uncond=0.5
    )
    assert float(loss.detach()) < 1e-8
    seen = oracle.seen[0]
    assert 10 < int((seen == cfg.null_class).sum()) < 54

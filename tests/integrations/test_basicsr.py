"""basicsr's own training pipeline with ``IFQAPixelLoss`` in ``pixel_opt`` (run by ``make test-integrations``).

basicsr needs torchvision, which does not import beside the main venv's torch 2.13.0: this file runs in
``.venv-integrations`` (torch 2.14.1, torchvision 0.29.1, basicsr-fixed 1.4.2) and is skipped elsewhere.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import REPO

try:
    import basicsr  # noqa: F401
except Exception as e:  # noqa: BLE001 - ImportError, or torchvision failing to load its operators
    pytest.skip(f"basicsr is not importable here ({type(e).__name__}: {e}); `make test-integrations` runs this "
                "test in its own venv", allow_module_level=True)

import yaml
from basicsr.utils.registry import ARCH_REGISTRY

FACES = REPO.parent / "shared" / "data" / "faces256" / "images"


class IFQATinyRestorer(nn.Module):
    """A small generator in [-1, 1], as GFPGAN's and CodeFormer's are."""

    def __init__(self, num_feat: int = 8) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, num_feat, 3, padding=1)
        self.conv_out = nn.Conv2d(num_feat, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x + self.conv_out(nn.functional.leaky_relu(self.conv_in(x), 0.2)))


if "IFQATinyRestorer" not in ARCH_REGISTRY:
    ARCH_REGISTRY.register(IFQATinyRestorer)


def test_importing_ifqa_loss_does_not_import_basicsr():
    import subprocess

    code = "import sys, ifqa_loss, ifqa_loss.integrations; assert 'basicsr' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_losses_follow_basicsr_conventions():
    from basicsr.losses import build_loss

    import ifqa_loss.integrations.basicsr as integration

    gen = torch.Generator().manual_seed(0)
    pred = (torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1).requires_grad_()
    target = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    combined = build_loss({"type": "IFQAPixelLoss", "loss_weight": 0.1, "ifqa_weight": 0.01})
    l1 = build_loss({"type": "L1Loss", "loss_weight": 0.1})
    realism = build_loss({"type": "IFQARealismLoss", "loss_weight": 0.01})
    assert isinstance(combined, integration.IFQAPixelLoss) and list(combined.state_dict()) == []
    total = combined(pred, target)
    assert torch.allclose(total, l1(pred, target) + realism(pred), atol=1e-6)
    assert 0 < realism(pred).item() < 0.01
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    # [0, 1] inputs: the same images in [0, 1] give the same IFQA term
    zero_one = build_loss({"type": "IFQARealismLoss", "loss_weight": 0.01, "input_range": [0, 1]})
    assert torch.allclose(zero_one((pred.detach() + 1) / 2), realism(pred.detach()), atol=1e-6)
    assert build_loss({"type": "IFQAPixelLoss", "reduction": "none"})(pred, target).shape == pred.shape
    assert realism(pred, weight=torch.ones(2, 1, 64, 64)).item() == pytest.approx(realism(pred).item(), abs=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        build_loss({"type": "IFQAPixelLoss", "reduction": "avg"})


@pytest.mark.skipif(not FACES.is_dir(), reason=f"{FACES} is absent (../shared/data, see its README)")
def test_basicsr_train_pipeline_with_ifqa_pixel_loss(tmp_path, monkeypatch):
    from basicsr.train import train_pipeline
    from PIL import Image, ImageFilter

    import ifqa_loss.integrations.basicsr as integration
    from ifqa_loss import IFQA

    # a handful of faces, read from ../shared (never copied into the repository), and blurred twins
    for name in sorted(p.name for p in FACES.glob("*.jpg"))[:6]:
        img = Image.open(FACES / name).convert("RGB")
        (tmp_path / "gt").mkdir(exist_ok=True)
        (tmp_path / "lq").mkdir(exist_ok=True)
        img.save(tmp_path / "gt" / f"{Path(name).stem}.png")
        img.filter(ImageFilter.GaussianBlur(2)).save(tmp_path / "lq" / f"{Path(name).stem}.png")
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in IFQATinyRestorer().state_dict().items()}
    torch.save({"params": init}, tmp_path / "init.pth")  # basicsr's checkpoint layout
    opt = {
        "name": "ifqa_pixel_loss", "model_type": "SRModel", "scale": 1, "num_gpu": 0, "manual_seed": 0,
        "datasets": {"train": {
            "name": "faces", "type": "PairedImageDataset", "dataroot_gt": str(tmp_path / "gt"),
            "dataroot_lq": str(tmp_path / "lq"), "filename_tmpl": "{}", "io_backend": {"type": "disk"},
            "gt_size": 128, "use_hflip": True, "use_rot": False,
            "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],  # [-1, 1], as GFPGAN and CodeFormer normalise
            "num_worker_per_gpu": 0, "batch_size_per_gpu": 2, "dataset_enlarge_ratio": 1, "prefetch_mode": None}},
        "network_g": {"type": "IFQATinyRestorer", "num_feat": 8},
        "path": {"pretrain_network_g": str(tmp_path / "init.pth"), "strict_load_g": True, "resume_state": None},
        "train": {
            "ema_decay": 0, "optim_g": {"type": "Adam", "lr": 2e-3},
            "scheduler": {"type": "MultiStepLR", "milestones": [1000], "gamma": 0.5},
            "total_iter": 4, "warmup_iter": -1,
            "pixel_opt": {"type": "IFQAPixelLoss", "loss_weight": 0.1, "reduction": "mean", "ifqa_weight": 0.01,
                          "ifqa_log_freq": 1}},
        "logger": {"print_freq": 1, "save_checkpoint_freq": 1000, "use_tb_logger": False,
                   "wandb": {"project": None, "resume_id": None}},
        "dist_params": {"backend": "gloo", "port": 29500},
    }
    (tmp_path / "train.yml").write_text(yaml.safe_dump(opt))

    built = []
    original_init = integration.IFQAPixelLoss.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(integration.IFQAPixelLoss, "__init__", recording_init)
    monkeypatch.setattr(sys, "argv", ["train.py", "-opt", str(tmp_path / "train.yml")])
    # as in a fresh train.py: basicsr's logger not yet set up (the tests above built losses, which set it up
    # without train_pipeline's log file)
    import logging

    from basicsr.utils import logger as basicsr_logger

    monkeypatch.delitem(basicsr_logger.initialized_logger, "basicsr", raising=False)
    for handler in list(logging.getLogger("basicsr").handlers):
        logging.getLogger("basicsr").removeHandler(handler)
    train_pipeline(str(tmp_path))

    experiment = tmp_path / "experiments" / "ifqa_pixel_loss"
    # the IFQA term is logged, once per iteration, with a value in (0, ifqa_weight]
    log = "\n".join(p.read_text() for p in experiment.glob("train_*.log"))
    lines = [line for line in log.splitlines() if "IFQAPixelLoss call" in line]
    assert len(lines) == 4, log[-3000:]
    values = [float(line.split("l_ifqa: ")[1].split()[0]) for line in lines]
    assert all(0 < v <= 0.01 for v in values)
    assert "l_pix:" in log  # basicsr's own line: the sum of both terms
    # the generator learnt
    final = torch.load(experiment / "models" / "net_g_latest.pth", weights_only=True)["params"]
    assert set(final) == set(init), "the checkpoint holds the generator only"
    assert any(not torch.equal(final[k], init[k]) for k in init)
    # IFQA did not: the built loss's network equals a fresh bundled model and never required grad
    assert len(built) == 1
    net = built[0].realism.ifqa.ifqa.net
    assert all(not p.requires_grad for p in net.parameters())
    fresh = IFQA().net.state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in net.state_dict().items())

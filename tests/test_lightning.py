"""IFQAMetric in a Lightning ``validation_step``, in a ``MetricCollection`` with PSNR updated by keyword."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio

from conftest import face_like_batch
from ifqa_loss import IFQAMetric

L = pytest.importorskip("lightning")


class Restorer(L.LightningModule):
    """A small 'restoration' network evaluated with IFQA and PSNR, the way a face-restoration project would."""

    def __init__(self, weights) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.gen = nn.Conv2d(3, 3, 3, padding=1)
        nn.init.dirac_(self.gen.weight)
        self.gen.weight.data += 0.05 * torch.randn_like(self.gen.weight)
        self.val_metrics = MetricCollection({"ifqa": IFQAMetric(weights=weights),
                                             "psnr": PeakSignalNoiseRatio(data_range=1.0)})
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def validation_step(self, batch, batch_idx):
        lq, hq = batch
        restored = self.gen(lq).clamp(0, 1)
        self.val_metrics.update(preds=restored, target=hq)
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True)
        self.seen.append((restored.detach().float(), hq.float()))


def _loader(n: int = 4):
    hq = face_like_batch(n, size=32, seed=9)
    lq = (hq + 0.1 * torch.randn(hq.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(lq, hq), batch_size=2)


@pytest.mark.parametrize("precision", ["32-true", "bf16-true"])
def test_validation_step_logs_ifqa_next_to_psnr(lite_weights, precision):
    module = Restorer(lite_weights)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on num_workers and the like
        (logged,) = trainer.validate(module, _loader(), verbose=False)
    assert set(logged) == {"ifqa", "psnr"}
    # the value logged is the mean over both batches of what the step scored, as a fresh metric gives it
    restored = torch.cat([r for r, _ in module.seen])
    hq = torch.cat([h for _, h in module.seen])
    assert restored.shape[0] == 4
    reference = IFQAMetric(weights=lite_weights)
    reference.update(restored)
    assert 0.0 < logged["ifqa"] < 1.0
    assert logged["ifqa"] == pytest.approx(reference.compute().item(), abs=1e-6)
    assert logged["psnr"] == pytest.approx(PeakSignalNoiseRatio(data_range=1.0)(restored, hq).item(), abs=0.05)
    # bf16-true casts the LightningModule; the IFQA network stays in float32
    ifqa = module.val_metrics["ifqa"]
    assert {p.dtype for p in ifqa.model.parameters()} == {torch.float32}
    assert ifqa.score_sum.dtype == torch.float64
    if precision == "bf16-true":
        assert module.gen.weight.dtype == torch.bfloat16

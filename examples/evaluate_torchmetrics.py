"""Evaluate a folder of restored faces with ``IFQAMetric`` (torchmetrics), on one process or under torchrun.

    python examples/evaluate_torchmetrics.py RESTORED_DIR [--out results.json]
    torchrun --nproc_per_node 2 examples/evaluate_torchmetrics.py RESTORED_DIR   # sharded, same result

Each process reads its own shard (every world_size-th file, no padding) through a DataLoader;
``IFQAMetric.compute()`` sums the states of all processes, so every rank gets the mean over the whole folder.
Each image, of any size, is resized on its own to the model's native size with the official resize
(``ifqa_loss.io.to_batch``, as ``ifqa score`` does), so they batch and the result is the mean of the scores
``ifqa score`` prints.
``--fast`` scores at most 8 images (CI).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifqa_loss import IFQAMetric  # noqa: E402
from ifqa_loss.io import list_images, to_batch  # noqa: E402
from ifqa_loss.preprocess import NATIVE  # noqa: E402


class FaceFolder(Dataset):
    """Images of a folder as (3, S, S) float tensors in [0, 1] at ``backbone``'s native size S; files that cannot be
    scored (undecodable, or under 16 px) are listed, not fatal."""

    def __init__(self, root: str | Path, backbone: str, limit: int | None = None) -> None:
        self.files = list_images(root, limit=limit)
        if not self.files:
            raise SystemExit(f"no images found in {root}")
        self.backbone = backbone

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            return to_batch([self.files[i]], self.backbone)[0], True, ""
        except ValueError as e:  # ImageDecodeError (a ValueError) or an image too small
            size = NATIVE[self.backbone][0]
            return torch.zeros(3, size, size), False, str(e)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="folder of restored (aligned) faces")
    ap.add_argument("--weights", default=None, help="IFQA weights (default: bundled ifqa-lite)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="write a JSON summary here (rank 0)")
    ap.add_argument("--fast", action="store_true", help="at most 8 images")
    args = ap.parse_args(argv)

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")

    metric = IFQAMetric(weights=args.weights).to(device)
    data = FaceFolder(args.folder, metric.model.backbone, limit=8 if args.fast else None)
    shard = Subset(data, range(rank, len(data), world))  # unlike DistributedSampler, never repeats a file
    loader = DataLoader(shard, batch_size=args.batch_size, num_workers=args.workers)
    failed = []
    for images, ok, err in loader:
        if not ok.all():
            failed += [e for e, good in zip(err, ok) if not good]
        if ok.any():
            metric.update(images[ok].to(device))
    score = metric.compute()  # all-reduced over ranks
    if distributed:
        gathered = [None] * world
        dist.all_gather_object(gathered, failed)
        failed = [e for part in gathered for e in part]
    summary = {"folder": str(args.folder), "images": len(data), "ifqa": float(score), "unreadable": failed,
               "weights": metric.model.weights_source, "world_size": world}
    if rank == 0:
        print(json.dumps(summary, indent=1))
        if args.out:
            Path(args.out).write_text(json.dumps(summary, indent=1))
    if distributed:
        dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    main()

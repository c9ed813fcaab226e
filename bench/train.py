"""Benchmark training throughput: fp32 against AMP + channels-last, and the pipeline's feed.

    python bench/train.py --arch resnet18 --size 224 --batch 64 --steps 10
    python bench/train.py --results results/demo --config config.yaml --workers 0 1 auto

On CUDA the second mode is bf16 (or --amp fp16) autocast with channels-last memory, as
`models.NAME.amp` / `channels_last` configure it; on CPU it is bf16 CPU autocast with
channels-last, which is often *slower* there (the pipeline only enables AMP on CUDA). Prints
images/s of both modes and their ratio.

With ``--results`` (a finished run's crops, labels and folds) it measures a config's model
instead: the bare step (forward + backward + optimizer step on a batch held in memory, fp32 as
the pipeline on CPU) against one training epoch of the pipeline (``maskpipe.train``: the
memory-mapped crops, augmentation, DataLoader) for each ``--workers`` setting
(``train.num_workers``: a count or ``auto``), each row with its share of the bare step. Run by
hand; tests/test_bench.py only checks that it runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from maskpipe.train.model import create_model


def throughput(model: nn.Module, device: torch.device, batch: int, size: int | tuple[int, int],
               steps: int, amp: torch.dtype | None, channels_last: bool) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    hw = (size, size) if isinstance(size, int) else size
    x = torch.randn(batch, 3, *hw, device=device).to(memory_format=fmt)
    y = torch.randint(0, 18, (batch,), device=device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)

    def step() -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(2):  # warm-up (cuDNN autotuning, allocator)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"


def pipeline_epoch(args: argparse.Namespace, model_name: str, model_cfg: dict, train_cfg: dict,
                   workers: int, device: torch.device) -> float:
    """Images/s of one training epoch of ``model_name`` on fold ``args.fold``, as `maskpipe train`
    builds it (the loop's own build and fit functions), with ``workers`` DataLoader workers."""
    from maskpipe.layout import Layout
    from maskpipe.train.build import build_data, build_model, build_parts, split_fold
    from maskpipe.train.loop import fit_epoch, seed_everything

    L = Layout(str(args.results))
    where, seed = f"models.{model_name}", train_cfg["seed"]
    generator = seed_everything(seed)
    tr, va = split_fold(Path(L.crop_index("train")), Path(L.labels()), Path(L.folds()), args.fold,
                        model_cfg, where)
    if args.images:
        tr = tr.head(args.images)
    model = build_model(model_cfg, device, where)
    data = build_data(Path(L.crops("train")), tr, va, model.pretrained_cfg, model_cfg, workers, seed,
                      generator, device.type == "cuda", where)
    parts = build_parts(model, data, model_cfg, device, where)
    return fit_epoch(parts, data, device, f"workers {workers}")["images_per_second"]


def pipeline_rows(args: argparse.Namespace, device: torch.device) -> None:
    """The bare step of the config's model against the pipeline's epoch per workers setting."""
    from maskpipe.config import as_hw, load_raw
    from maskpipe.train.build import build_model
    from maskpipe.devices import resolve_workers

    raw = load_raw(args.config)
    model_name = args.model or next(iter(raw["models"]))
    model_cfg, train_cfg = raw["models"][model_name], raw["train"]
    size, batch = as_hw(model_cfg["image_size"]), model_cfg["batch_size"]
    torch.manual_seed(0)
    model = build_model(model_cfg, device, f"models.{model_name}")  # the pipeline's, head and all
    bare = throughput(model, device, batch, size, args.steps, None, False)
    print(f"{model_name} ({model_cfg['arch']}) at {size[0]}x{size[1]}, batch {batch}, fold {args.fold} "
          f"of {args.results} on {_device_name(device)}")
    print(f"bare step (batch in memory):  {bare:8.1f} img/s")
    for setting in args.workers:
        setting = setting if setting == "auto" else int(setting)
        workers = resolve_workers(setting, device.type)
        ips = pipeline_epoch(args, model_name, model_cfg, train_cfg, workers, device)
        label = f"auto (= {workers})" if setting == "auto" else str(workers)
        print(f"pipeline, num_workers {label + ':':10s}{ips:8.1f} img/s  ({ips / bare:.2f} of the bare step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--amp", choices=["bf16", "fp16"], default="bf16")
    parser.add_argument("--results", type=Path, help="a finished run: measure the pipeline's feed on it")
    parser.add_argument("--config", type=Path, nargs="+", default=[Path("config.yaml")],
                        help="with --results: the run's config file(s)")
    parser.add_argument("--model", help="with --results: models.NAME (default: the first)")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--workers", nargs="+", default=["0", "1", "auto"],
                        help="with --results: train.num_workers settings, one row each")
    parser.add_argument("--images", type=int, default=0,
                        help="with --results: the fold's first N training images (0: all)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.results:
        pipeline_rows(args, device)
        return
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    torch.manual_seed(0)
    base = create_model(args.arch)
    fp32 = throughput(base, device, args.batch, args.size, args.steps, None, False)
    torch.manual_seed(0)
    fast = throughput(create_model(args.arch), device, args.batch, args.size, args.steps, amp, True)
    print(f"{args.arch} at {args.size}px, batch {args.batch}, {args.steps} steps on {_device_name(device)}")
    print(f"fp32:                     {fp32:8.1f} img/s")
    print(f"{args.amp} + channels_last:     {fast:8.1f} img/s")
    print(f"ratio: {fast / fp32:.2f}x")


if __name__ == "__main__":
    main()

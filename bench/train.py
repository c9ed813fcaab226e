"""Benchmark training throughput: fp32 against AMP + channels-last, in the same run.

    python bench/train.py --arch resnet18 --size 224 --batch 64 --steps 10

On CUDA the second mode is bf16 (or --amp fp16) autocast with channels-last memory, as
`models.NAME.amp` / `channels_last` configure it; on CPU it is bf16 CPU autocast with
channels-last, which is often *slower* there (the pipeline only enables AMP on CUDA). Prints
images/s of both modes and their ratio. Run by hand; nothing here is timed in the tests.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from maskpipe.train.model import create_model


def throughput(model: nn.Module, device: torch.device, batch: int, size: int, steps: int,
               amp: torch.dtype | None, channels_last: bool) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=fmt)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--amp", choices=["bf16", "fp16"], default="bf16")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    torch.manual_seed(0)
    base = create_model(args.arch)
    fp32 = throughput(base, device, args.batch, args.size, args.steps, None, False)
    torch.manual_seed(0)
    fast = throughput(create_model(args.arch), device, args.batch, args.size, args.steps, amp, True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.arch} at {args.size}px, batch {args.batch}, {args.steps} steps on {name}")
    print(f"fp32:                     {fp32:8.1f} img/s")
    print(f"{args.amp} + channels_last:     {fast:8.1f} img/s")
    print(f"ratio: {fast / fp32:.2f}x")


if __name__ == "__main__":
    main()

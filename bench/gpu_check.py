"""The measuring parts of bench/gpu_check.sh (run that; this file is its helper).

    python bench/gpu_check.py speed    --rows R --archs resnet50,convnext_tiny --size 224 ...
    python bench/gpu_check.py pipeline --rows R --work DIR --data DEMO --folds 5 --epochs 2 ...
    python bench/gpu_check.py table    --rows R

Each measuring command appends ``section<TAB>what<TAB>figure`` lines to the rows file ``R``;
``table`` prints them as the one table the check ends with.

``speed``: training images/s of fp32 against AMP + channels-last, per timm architecture, with
their ratio, in the same process (bench/train.py's ``throughput``).
``pipeline``: a demo data set (``maskpipe demo-data``) run from crop to submission with a config written
here (every step through the ``maskpipe`` CLI in this process, one after another), each step
timed; GPU busy % sampled with ``nvidia-smi`` while the training steps run; the crop step's
images/s; and the projection to a full schedule: each fold's training time scaled by
``full_epochs / epochs`` (conservative: its fixed start-up cost is scaled too), plus every other
step's time as measured.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def add_row(rows: Path, section: str, what: str, figure: str) -> None:
    with rows.open("a") as f:
        f.write(f"{section}\t{what}\t{figure}\n")


def speed(args: argparse.Namespace) -> None:
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from train import throughput  # bench/train.py

    from maskpipe.train.model import create_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    for arch in args.archs.split(","):
        torch.manual_seed(0)
        fp32 = throughput(create_model(arch), device, args.batch, args.size, args.steps, None, False)
        torch.manual_seed(0)
        fast = throughput(create_model(arch), device, args.batch, args.size, args.steps, amp, True)
        add_row(args.rows, "train img/s", f"{arch} {args.size}px b{args.batch} {device.type}",
                f"fp32 {fp32:.0f}, {args.amp}+channels_last {fast:.0f}: {fast / fp32:.2f}x")


@contextlib.contextmanager
def gpu_busy(gpu: str, samples: list[float], period_ms: int = 200) -> Iterator[None]:
    """Append the GPU's utilization % every ``period_ms`` while the block runs (nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        yield
        return
    proc = subprocess.Popen(["nvidia-smi", "-i", gpu, "--query-gpu=utilization.gpu",
                             "--format=csv,noheader,nounits", "-lms", str(period_ms)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        yield
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        samples.extend(float(v) for v in out.split() if v.strip().replace(".", "", 1).isdigit())


def _workers(setting: str) -> int | str:
    return setting if setting == "auto" else int(setting)


def pipeline_config(args: argparse.Namespace, data: Path, results: Path) -> dict:
    """The shipped config.yaml with this run's data, sizes, model and schedule."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["data"]["root"], cfg["results"] = str(data), str(results)
    cfg["crop"]["size"] = list(args.crop_size)
    cfg["folds"]["k"] = args.folds
    cfg["train"]["num_workers"] = _workers(args.num_workers)
    base = copy.deepcopy(next(iter(cfg["models"].values())))
    base.update(arch=args.arch, pretrained=False, image_size=list(args.image_size),
                epochs=args.epochs, batch_size=args.batch, amp="bf16", channels_last=True)
    cfg["models"] = {"gpucheck": base}
    cfg["predict"]["batch_size"] = args.batch * 2
    return cfg


def pipeline(args: argparse.Namespace) -> None:
    from maskpipe.config import load_raw
    from maskpipe.layout import Layout
    from maskpipe.dag.jobs import jobs_for

    data, results = args.data, args.work / "results"
    shutil.rmtree(results, ignore_errors=True)  # a reused work folder: no old checkpoint or resume.pt
    args.work.mkdir(parents=True, exist_ok=True)
    demo = json.loads((data / "demo.json").read_text())  # written last: the demo is complete
    args.persons, args.eval_images = demo["persons"], demo["eval_images"]
    config = args.work / "config.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(args, data, results), sort_keys=False))
    raw = load_raw([config])
    # Every job `snakemake submission` would run (the persons step too, not mislabels or the
    # report), its command from the step table as the engines run it: no option spelled here.
    todo = jobs_for("submit", raw)
    busy: list[float] = []
    timed = run_jobs(args, todo, raw, config, busy)
    report(args, Layout(str(results)), todo, timed, busy)


class Stopped(BaseException):
    """The part's deadline (a BaseException: the CLI's handlers let it through)."""


def _stop(signum: int, frame: object) -> None:
    raise Stopped


def run_jobs(args: argparse.Namespace, todo: list, raw: dict, config: Path,
             busy: list[float]) -> list[float]:
    """Run the jobs in order, GPU busy sampled while training; the seconds of each that finished.

    ``--limit`` is this process's own deadline (SIGALRM: neither the DataLoader workers, which
    a shell ``timeout`` would signal too and so crash the loader, nor forked children get it);
    reached, the jobs that finished are what the rows report.
    """
    from maskpipe.dag.jobs import resolve
    from maskpipe.dag.runner import run_job

    seconds: list[float] = []
    before = signal.signal(signal.SIGALRM, _stop)
    signal.setitimer(signal.ITIMER_REAL, args.limit)
    try:
        for step, job in todo:
            start = time.perf_counter()
            with gpu_busy(args.gpu, busy) if step.runs == "train" else contextlib.nullcontext():
                run_job(resolve(step, raw, **job), [config])
            seconds.append(time.perf_counter() - start)
    except Stopped:
        following = todo[len(seconds)][0].name if len(seconds) < len(todo) else "none"
        add_row(args.rows, "pipeline", "stopped at its limit",
                f"after {len(seconds)} of {len(todo)} jobs ({args.limit:.0f} s; next: "
                f"{following}); the rows below are of what finished")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
    return seconds


def report(args: argparse.Namespace, L, todo: list, seconds: list[float], busy: list[float]) -> None:
    """Rows of the pipeline: per-step times, crop images/s, GPU busy, training images/s, projection."""
    from maskpipe.devices import resolve_workers

    done = todo[:len(seconds)]
    by_step: dict[str, float] = {}
    for (step, _), t in zip(done, seconds):
        by_step[step.name] = by_step.get(step.name, 0.0) + t
    trained = [(job, t, json.loads(Path(L.train_metrics(job["model"], job["fold"])).read_text()))
               for (step, job), t in zip(done, seconds) if step.runs == "train"]
    device = trained[0][2]["device"] if trained else "no fold trained"
    workers = resolve_workers(_workers(args.num_workers), device.split(":")[0])  # as the jobs resolved it
    size = f"{args.persons} persons + {args.eval_images} eval, crop {args.crop_size[0]}x{args.crop_size[1]}"
    add_row(args.rows, "pipeline", f"run: {size}, {args.arch} {args.image_size[0]}x{args.image_size[1]}, "
            f"{args.folds} folds x {args.epochs} epochs, {device}, "
            f"{workers} loader workers",
            " ".join(f"{k} {v:.0f}s" for k, v in by_step.items()))
    if "crop" in by_step:
        n_images = sum(len(Path(L.crop_index(s)).read_text().splitlines()) - 1 for s in ("train", "eval"))
        add_row(args.rows, "crop img/s", f"{n_images} images, detection and crops",
                f"{n_images / by_step['crop']:.0f}")
    if trained:
        last = [m["history"][-1]["images_per_second"] for _, _, m in trained]
        add_row(args.rows, "pipeline", f"training img/s (last epoch, mean of {len(trained)} folds)",
                f"{statistics.mean(last):.0f}")
    if busy:
        share = sum(b >= 80 for b in busy) / len(busy)
        add_row(args.rows, "GPU busy %", f"during training, {len(busy)} samples (goal >= 80)",
                f"mean {statistics.mean(busy):.0f}, median {statistics.median(busy):.0f}, "
                f">= 80 in {share:.0%} of samples")
    else:
        add_row(args.rows, "GPU busy %", "during training", "n/a (no nvidia-smi)")
    projection(args, todo, done, seconds, trained)


def projection(args: argparse.Namespace, todo: list, done: list, seconds: list[float],
               trained: list) -> None:
    """Crop to submission at ``--full-epochs``: each training job's time plus its last epoch's
    seconds for every further epoch (its start-up is not multiplied); a job the limit stopped
    counts as the mean of the finished jobs of its step, if any."""
    if not trained:
        add_row(args.rows, "projection", "crop to submission", "n/a: no fold finished training")
        return
    extra = args.full_epochs - args.epochs
    full = [t + extra * m["history"][-1]["seconds"] for _, t, m in trained]
    per_job: dict[str, list[float]] = {}
    for (step, _), t in zip(done, seconds):
        if step.runs != "train":
            per_job.setdefault(step.name, []).append(t)
    per_job["train"] = full
    total, missing = 0.0, []
    for step, _ in todo:
        name = "train" if step.runs == "train" else step.name
        if name in per_job:
            total += statistics.mean(per_job[name])
        elif step.name not in missing:
            missing.append(step.name)
    short = sum(seconds)
    add_row(args.rows, "projection", f"crop to submission, {args.folds} folds x 1 model x "
            f"{args.full_epochs} epochs (goal < 1 h)",
            f"{total / 60:.1f} min ({short / 60:.1f} min measured at {args.epochs} epochs"
            f"{', of ' + str(len(seconds)) + ' of ' + str(len(todo)) + ' jobs' if len(seconds) < len(todo) else ''}"
            f"{'; not reached, not counted: ' + ', '.join(missing) if missing else ''})")


def table(args: argparse.Namespace) -> None:
    rows = [line.split("\t") for line in args.rows.read_text().splitlines() if line.strip()]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    print(f"{'section':<{widths[0]}}  {'what':<{widths[1]}}  figure")
    print(f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * 6}")
    for section, what, figure in rows:
        print(f"{section:<{widths[0]}}  {what:<{widths[1]}}  {figure}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--archs", default="resnet50,convnext_tiny,efficientnet_b0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--amp", choices=["bf16", "fp16"], default="bf16")
    p = sub.add_parser("pipeline")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="a demo made by `maskpipe demo-data`")
    p.add_argument("--crop-size", type=int, nargs=2, default=[320, 256], metavar=("H", "W"))
    p.add_argument("--arch", default="efficientnet_b0")
    p.add_argument("--image-size", type=int, nargs=2, default=[256, 224], metavar=("H", "W"))
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--full-epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--num-workers", default="auto")
    p.add_argument("--gpu", default="0", help="nvidia-smi index of the GPU to sample")
    p.add_argument("--limit", type=float, default=0,
                   help="seconds after which the jobs stop and what finished is reported (0: none)")
    sub.add_parser("table")
    for p in sub.choices.values():
        p.add_argument("--rows", type=Path, required=True)
    args = parser.parse_args(argv)
    {"speed": speed, "pipeline": pipeline, "table": table}[args.command](args)


if __name__ == "__main__":
    main()

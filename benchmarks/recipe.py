"""Does chestaid's training recipe beat a plain DenseNet-121 loop, and what does each part of it earn?

On one set of synthetic NIH-layout images (a phantom family, `chestaid synth nih --family`), the same sizes and
epochs, each seed trains side by side:
- `baseline`: torchvision's DenseNet-121 in a plain loop (no FPN, no fusion, no augmentation, no pos_weight,
  Adam 1e-3, batch 32, input (x-0.5)/0.25, every non-test image, the last epoch's weights);
- chestaid's shipped demo recipe (`recipe`), and variants of it that switch one part each (VARIANTS).
Every chestaid run is scored twice on the test split: with the checkpoint chosen on validation (`best`, what
chestaid ships) and with the last epoch's weights (`last`), so checkpoint selection is measured without training
again. What the validation carve-out costs is measured on the baseline: `baseline_train` is the same loop on the
train split only (chestaid trains on train and chooses on val).

Writes benchmarks/results/recipe_<family or data folder>_<size>px.json (or --out) after every run (a killed
benchmark resumes where it stopped).
Usage: python benchmarks/recipe.py --family b [--images 1500] [--size 128] [--epochs 6] [--seeds 0 1 2]
                                   [--variants baseline,recipe,...] [--work DIR]
       python benchmarks/recipe.py --data NIH_LAYOUT_ROOT [...]   (images you already have, e.g. a third family)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from common import RESULTS, write_result

BASELINES = {"baseline": "plain torchvision loop on train+val, last epoch",
             "baseline_train": "plain torchvision loop on train only, last epoch",
             "baseline_imagenet": "plain torchvision loop on train+val, last epoch, chestaid's ImageNet input "
                                  "normalisation instead of (x-0.5)/0.25"}
OFF = {"crop": 1.0, "rotate_deg": 0.0, "translate": 0.0, "blur_p": 0.0, "brightness": 0.0, "contrast": 0.0}
SEED_AUGMENT = {"crop": 0.9, "rotate_deg": 7.0, "translate": 0.06, "blur_p": 0.4, "brightness": 0.0, "contrast": 0.0}
# the demo recipe before issue 10 (seed 000's parts), complete
SEED_DEMO = {"model.fpn": True, "model.fpn_head": "seed", "model.fpn_norm": False, "model.pool": "avg",
             "model.tabular": True, "model.hidden": [128], "model.dropout": 0.2, "loss.pos_weight": "log",
             "data.augment": SEED_AUGMENT, "train.schedule": "plateau", "train.warmup_epochs": 0}
# every part off: chestaid's plain DenseNet-121
PLAIN = {**SEED_DEMO, "model.fpn": False, "model.tabular": False, "model.hidden": [], "model.dropout": 0.0,
         "loss.pos_weight": "none", "data.augment": OFF}
COSINE = {**PLAIN, "train.schedule": "cosine", "train.warmup_epochs": 0.5}
# each variant: overrides on the shipped demo config ("recipe" is the demo as shipped)
VARIANTS: dict[str, dict] = {
    "recipe": {},
    # the shipped recipe with one part switched
    "recipe-fpn": {"model.fpn": False},
    "recipe-fpn_c5": {"model.fpn_head": "seed"},
    "recipe-fpn_norm": {"model.fpn_norm": False},
    "recipe-avgmax": {"model.pool": "avg"},
    "recipe-fusion": {"model.tabular": False},
    "recipe-pos_weight": {"loss.pos_weight": "none"},
    "recipe-cosine": {"train.schedule": "plateau", "train.warmup_epochs": 0},
    "recipe+augment": {"data.augment": SEED_AUGMENT},
    "recipe+hidden": {"model.hidden": [128], "model.dropout": 0.2},
    # more optimiser steps for the same images and epochs; a higher peak learning rate
    "recipe+batch16": {"data.batch_size": 16},
    "recipe+lr2x": {"train.lr": 0.002},
    # the demo recipe before issue 10, and each of its parts switched off
    "seed_demo": SEED_DEMO,
    "seed_demo-fpn": {**SEED_DEMO, "model.fpn": False},
    "seed_demo-fusion": {**SEED_DEMO, "model.tabular": False},
    "seed_demo-augment": {**SEED_DEMO, "data.augment": OFF},
    "seed_demo-pos_weight": {**SEED_DEMO, "loss.pos_weight": "none"},
    "seed_demo-head": {**SEED_DEMO, "model.hidden": [], "model.dropout": 0.0},
    # build-up: from every part off, one part on at a time
    "plain": PLAIN,
    "plain+fpn": {**PLAIN, "model.fpn": True},
    "plain+fpn_c5_avgmax": {**PLAIN, "model.fpn": True, "model.fpn_head": "with_c5", "model.pool": "avgmax"},
    "plain+fusion": {**PLAIN, "model.tabular": True},
    "plain+augment_mild": {**PLAIN, "data.augment": {"crop": 1.0, "rotate_deg": 5, "translate": 0.03, "blur_p": 0.0}},
    "plain+cosine": COSINE,
    "plain+pos_weight": {**PLAIN, "loss.pos_weight": "log"},
    "plain+hidden": {**PLAIN, "model.hidden": [128], "model.dropout": 0.2},
    "cosine+fpn_norm": {**COSINE, "model.fpn": True, "model.fpn_norm": True},
    "cosine+fpn_norm_c5_avgmax": {**COSINE, "model.fpn": True, "model.fpn_norm": True, "model.fpn_head": "with_c5",
                                  "model.pool": "avgmax"},
    "cosine+avgmax": {**COSINE, "model.pool": "avgmax"},
    "cosine+fusion": {**COSINE, "model.tabular": True},
}


def evaluate_logits(y: np.ndarray, logits: np.ndarray, labels: tuple[str, ...]) -> dict:
    per = {name: float(roc_auc_score(y[:, i], logits[:, i])) for i, name in enumerate(labels)
           if 0 < y[:, i].sum() < len(y)}
    return {"mean_auroc": float(np.mean(list(per.values()))), "auroc": per}


def chestaid_logits(model, cache, cfg) -> tuple[np.ndarray, np.ndarray]:
    """Test logits of a ChestNet through chestaid's own evaluation transform."""
    from chestaid.data.augment import eval_transform
    from chestaid.data.dataset import CacheDataset

    dataset = CacheDataset(cache, split="test")
    model.eval()
    out = []
    with torch.inference_mode():
        for images, tabular, _ in DataLoader(dataset, batch_size=64):
            x = eval_transform(images, cfg.data.image_size, cfg.data.augment.crop)
            out.append(model(x, tabular if cfg.model.tabular else None).numpy())
    return dataset.targets.numpy().astype(int), np.concatenate(out)


def run_baseline(cache, seed: int, epochs: int, splits: tuple[str, ...] = ("train", "val"),
                 imagenet: bool = False) -> dict:
    """The 30-line loop a new user would write first (`imagenet`: chestaid's input normalisation instead)."""
    import torchvision

    from chestaid.data.augment import eval_transform
    from chestaid.data.dataset import CacheDataset

    torch.manual_seed(seed)
    labels = cache.task.labels
    net = torchvision.models.densenet121(weights=None, num_classes=len(labels))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    rows = cache.table[cache.table["split"].isin(splits)]
    loader = DataLoader(CacheDataset(cache, rows=rows), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))

    def prepare(images: torch.Tensor) -> torch.Tensor:
        if imagenet:
            return eval_transform(images, images.shape[-1], 1.0)
        return ((images.float() / 255 - 0.5) / 0.25).expand(-1, 3, -1, -1)

    for _ in range(epochs):
        net.train()
        for images, _, target in loader:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(prepare(images)), target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    net.eval()
    test = CacheDataset(cache, split="test")
    with torch.inference_mode():
        logits = np.concatenate([net(prepare(images)).numpy() for images, _, _ in DataLoader(test, batch_size=64)])
    return {"last": evaluate_logits(test.targets.numpy().astype(int), logits, labels)}


def run_chestaid(cache, run: Path, overrides: dict, seed: int, size: int, epochs: int) -> dict:
    import chestaid
    from chestaid.training.module import ChestModule
    from chestaid.core.run_paths import RunPaths

    settings = {"data.image_size": size, "data.cache_size": size, "train.epochs": epochs, "train.seed": seed,
                "train.checkpoint_every_n_steps": 0, **overrides}
    paths = RunPaths(run)
    if not paths.config.is_file():
        chestaid.train(cache.root, run, config="demo", overrides=settings)
    elif not paths.train_log.is_file() or len(pd.read_csv(paths.train_log)) < epochs:  # killed: go on
        chestaid.train(None, run, resume=True)
    predictor = chestaid.Predictor.load(run)
    labels = cache.task.labels
    out = {"best": evaluate_logits(*chestaid_logits(predictor.model, cache, predictor.cfg), labels)}
    last = ChestModule.load_from_checkpoint(paths.checkpoints / "last.ckpt", map_location="cpu")
    out["last"] = evaluate_logits(*chestaid_logits(last.model, cache, predictor.cfg), labels)
    return out


def summarise(runs: list[dict], labels: tuple[str, ...]) -> dict:
    table = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        for pick in ("best", "last"):
            scores = [r[pick] for r in runs if r["variant"] == name and pick in r]
            if not scores:
                continue
            means = np.array([s["mean_auroc"] for s in scores])
            per = {f: [s["auroc"][f] for s in scores if f in s["auroc"]] for f in labels}
            table[f"{name}/{pick}"] = {
                "seeds": len(scores), "mean_auroc": round(float(means.mean()), 4),
                "sd": round(float(means.std(ddof=1)), 4) if len(means) > 1 else None,
                "per_finding": {f: round(float(np.mean(v)), 3) for f, v in per.items() if v}}
    return table


def markdown(result: dict) -> str:
    """The runs as a Markdown table: test mean AUROC with the checkpoint chestaid keeps (best on validation;
    the baselines: their last epoch), mean ± sd over seeds, the last epoch's beside it, and per finding."""
    runs = result["runs"]
    findings = sorted({f for r in runs for pick in ("best", "last") if pick in r for f in r[pick]["auroc"]})
    table = summarise(runs, tuple(findings))
    short = [f.replace("Pleural_Thickening", "P.Thick.")[:8] for f in findings]
    lines = ["| variant | seeds | test mean AUROC | last epoch | " + " | ".join(short) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in findings) + " |"]
    names = dict.fromkeys(r["variant"] for r in runs)
    rows = [(name, table.get(f"{name}/best") or table[f"{name}/last"], table[f"{name}/last"]) for name in names]
    rows.sort(key=lambda row: (not row[0].startswith("baseline"), -row[1]["mean_auroc"]))
    for name, kept, last in rows:
        spread = f" ± {kept['sd']:.3f}" if kept["sd"] is not None else ""
        lines.append(f"| {name} | {kept['seeds']} | {kept['mean_auroc']:.3f}{spread} | {last['mean_auroc']:.3f} | "
                     + " | ".join(f"{kept['per_finding'].get(f, float('nan')):.2f}" for f in findings) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="b", help="phantom family of `chestaid synth nih --family`")
    parser.add_argument("--data", type=Path, default=None, help="an NIH-layout root you already have (another "
                        "phantom generator, a part of the real set): used as it is, nothing is synthesised")
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", default="baseline,recipe", help=f"of {', '.join([*BASELINES, *VARIANTS])}")
    parser.add_argument("--data-seed", type=int, default=0, help="which images (kept apart from training seeds)")
    parser.add_argument("--work", type=Path, default=None, help="keeps data, cache and runs (default: "
                        "benchmarks/work/recipe_<family or data folder>_<size>px)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--table", action="store_true", help="print the result file as a Markdown table, train nothing")
    args = parser.parse_args()
    name = f"recipe_{args.data.resolve().name if args.data else args.family}_{args.size}px"
    out = Path(args.out) if args.out else RESULTS / f"{name}.json"
    if args.table:
        if not out.is_file():
            parser.error(f"{out}: no such result file")
        print(markdown(json.loads(out.read_text())))
        return
    from chestaid.data.cache import Cache, prepare
    from chestaid.data.phantoms.synthetic import synth_nih

    work = args.work or Path(__file__).resolve().parent / "work" / name
    data, cache_dir = args.data or work / "data", work / "cache"
    if not (data / "test_list.txt").is_file():
        if args.data:
            parser.error(f"{data}: no test_list.txt; --data needs an NIH-layout root")
        synth_nih(data, args.images, size=args.size, seed=args.data_seed, family=args.family, workers=2)
    prepare(data, cache_dir, size=args.size, workers=2)
    cache = Cache.open(cache_dir)
    done = json.loads(out.read_text())["runs"] if out.is_file() else []
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in BASELINES and v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}")
    for seed in args.seeds:
        for variant in variants:
            if any(r["variant"] == variant and r["seed"] == seed for r in done):
                continue
            started = time.perf_counter()
            if variant.startswith("baseline"):
                result = run_baseline(cache, seed, args.epochs, ("train",) if variant == "baseline_train"
                                      else ("train", "val"), imagenet=variant == "baseline_imagenet")
            else:
                result = run_chestaid(cache, work / "runs" / f"{variant}_{seed}", VARIANTS[variant], seed,
                                      args.size, args.epochs)
            done.append({"variant": variant, "seed": seed, **result,
                         "seconds": round(time.perf_counter() - started, 1)})
            print(variant, seed, {k: result[k]["mean_auroc"] for k in ("best", "last") if k in result}, flush=True)
            counts = cache.table.groupby("split").size().to_dict()
            write_result("recipe", {
                "setup": (f"{data}: {len(cache.table)} NIH-layout images" if args.data else
                          f"family {args.family}: {args.images} synthetic NIH images (data seed {args.data_seed})")
                         + f" at {args.size} px (splits {counts}), {args.epochs} epochs",
                "variants": {v: BASELINES.get(v) or VARIANTS[v] for v in variants},
                "summary": summarise(done, cache.task.labels), "runs": done}, out, echo=False)


if __name__ == "__main__":
    main()

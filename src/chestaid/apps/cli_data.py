"""The CLI's data commands: synth, weights import-xrv, prepare, stats (each calls the library)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from chestaid.apps.cli_output import console, err, fail


def parse_fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or abs(sum(parts) - 1) > 1e-6:
        fail(f"--fractions must be three numbers summing to 1 (train,val,test), got {text!r}")
    return parts  # type: ignore[return-value]


def synth_nih_cmd(out: Path, n: Annotated[int, typer.Option("--n", min=1)] = 2000,
                  size: Annotated[int, typer.Option("--size", min=32)] = 256,
                  seed: int = 0, enrich: Annotated[bool, typer.Option(help="oversample rarer findings")] = True,
                  per_folder: Annotated[int, typer.Option(min=1)] = 10_000,
                  family: Annotated[str, typer.Option(help="phantom family: a (data/phantoms/family_a.py) or b "
                                                          "(data/phantoms/family_b.py, drawn apart)")] = "a") -> None:
    """NIH layout: Data_Entry_2017.csv, images_001/images/*.png, BBox_List_2017.csv (1024-pixel frame, as
    NIH's), split lists."""
    import chestaid

    chestaid.synth("nih", out, n, size, seed, enrich=enrich, per_folder=per_folder, family=family)
    console.print(f"wrote {n} synthetic NIH-layout images (family {family}) to {out}")


def synth_pneumonia_cmd(out: Path, n: Annotated[int, typer.Option("--n", min=8)] = 1500,
                        size: Annotated[int, typer.Option("--size", min=32)] = 256, seed: int = 0) -> None:
    """Kaggle layout: train|val|test/NORMAL|PNEUMONIA/*.jpeg."""
    import chestaid

    chestaid.synth("pneumonia", out, n, size, seed)
    console.print(f"wrote {n} synthetic pneumonia-layout images to {out}")


def import_xrv_cmd(source: Annotated[str, typer.Argument(help="a torchxrayvision file or (with torchxrayvision "
                                                          "installed) name, e.g. densenet121-res224-all; or a "
                                                          "CheXNet-style DenseNet-121 state dict")],
                   out: Annotated[Optional[Path], typer.Option("--out", help="backbone .safetensors to write (for "
                                                               "model.weights; the classifier is dropped)")] = None,
                   as_run: Annotated[Optional[Path], typer.Option("--as-run", help="a complete run folder to write, "
                                                                  "classifier included")] = None,
                   task: Annotated[Optional[str], typer.Option(help="--as-run: nih, pneumonia, or findings A,B,… "
                                                               "(default: nih when the weights cover it)")] = None,
                   labels: Annotated[Optional[str], typer.Option(help="the file's output order when it does not say "
                                                                 "(A,B,…; 'chexnet' for CheXNet's order)")] = None,
                   size: Annotated[Optional[int], typer.Option(min=32, max=2048, help="--as-run: input resolution "
                                                               "when the source does not state it (224)")] = None,
                   trust_pickle: Annotated[bool, typer.Option(help="unpickle the file (runs code from it): only for "
                                                              "files from a source you trust")] = False) -> None:
    """Bring published weights in: a whole run (--as-run, scores uncalibrated until `calibrate --cohort`), or the
    backbone only (--out) to train from."""
    import chestaid

    if (out is None) == (as_run is None):
        fail("give --as-run RUN (a whole run) or --out FILE (the backbone only), one of them")
    if as_run is None:
        if task or labels or size:
            fail("--task, --labels and --size go with --as-run")
        written = chestaid.import_xrv(source, out, trust_pickle)
        console.print(f"wrote {written}: use it with --set model.weights={written} (and data.augment.crop=1.0 to "
                      "see images framed as torchxrayvision's models were trained)")
        return
    run = chestaid.import_model(source, as_run, task, labels.split(",") if labels is not None else None,
                                trust_pickle, size)
    console.print(f"wrote the run {run} (imported; its scores are uncalibrated and it has no input gate). Next: "
                  f"chestaid gate fit {run} --images LOCAL_IMAGES, then chestaid calibrate {run} --cohort "
                  "LABELLED_COHORT")


def gate_fit_cmd(run: Path, images: Annotated[list[Path], typer.Option("--images", help="files or folders of local "
                                                                        "frontal chest images (no labels needed)")],
                 percentile: Annotated[float, typer.Option(min=50, max=99.9, help="images like these are refused "
                                                           "at most (100 − percentile)% of the time")] = 99.0,
                 seed: int = 0) -> None:
    """Fit the run's input gate on unlabelled local images (half fit it, half set its threshold)."""
    import chestaid

    fitted = chestaid.fit_gate(run, images, percentile, seed)
    info = fitted.gate.info
    console.print(f"{run}: input gate fitted on {info['train_images']} images, threshold "
                  f"{fitted.gate.threshold:.1f} set on {info['val_images']} ({percentile:g}th percentile, "
                  "conformal)")
    if fitted.passed_over:
        err.print(f"{len(fitted.passed_over)} file(s) passed over, e.g. {fitted.passed_over[0][0]}: "
                  f"{fitted.passed_over[0][1]}")


def prepare(root: Annotated[Optional[Path], typer.Argument(help="an NIH or Kaggle pneumonia folder")] = None,
            out: Annotated[Path, typer.Option("--out")] = ...,
            table: Annotated[Optional[Path], typer.Option(help="your own CSV: path, patient_id, [age, sex, view, "
                                                          "split,] one 0/1 column per label (docs/own_data.md)")] = None,
            task: Annotated[Optional[str], typer.Option(help="--table: the task's name (default: the CSV's name)")] = None,
            labels: Annotated[Optional[str], typer.Option(help="--table: label columns, comma-separated "
                                                          "(default: every other column)")] = None,
            size: Annotated[int, typer.Option(min=32, max=2048)] = 256,
            workers: Annotated[Optional[int], typer.Option(min=1)] = None,
            fractions: Annotated[str, typer.Option(help="train,val,test when no official lists")] = "0.72,0.08,0.20",
            seed: int = 0) -> None:
    """Decode every image once into a resumable uint8 cache with the patient-level split table.

    Exit 0 when at least one image was cached (unreadable files are listed), 1 when none could be read."""
    import chestaid

    if (root is None) == (table is None):
        fail("give a source folder or --table CSV (one of them)")
    if root is not None and (task or labels):
        fail("--task and --labels go with --table")
    report = chestaid.prepare(root, out, table=table, task=task, labels=labels.split(",") if labels else None,
                              size=size, workers=workers, fractions=parse_fractions(fractions), seed=seed)
    console.print(f"task {report.task.name} ({report.task.kind}: {', '.join(report.task.labels)})")
    console.print(f"cache {report.cache}: {report.cached}/{report.total} images cached "
                  f"({report.decoded_now} decoded in this run)")
    if report.ages_clipped:
        console.print(f"note: {report.ages_clipped} ages over 100 were clipped to 100")
    if report.skipped:
        err.print(f"[yellow]warning:[/] {len(report.skipped)} file(s) skipped (listed in {out / 'skipped.csv'}):")
        for path, reason in report.skipped[:20]:
            err.print(f"  {path}: {reason}", highlight=False)
        if len(report.skipped) > 20:
            err.print(f"  ... and {len(report.skipped) - 20} more")
    if report.cached == 0:
        fail("no image could be read", code=1)


def stats(path: Annotated[Path, typer.Argument(help="NIH CSV, NIH or Kaggle root, or a cache")],
          as_json: Annotated[bool, typer.Option("--json")] = False,
          plot: Annotated[Optional[Path], typer.Option("--plot", help="folder for the figures")] = None,
          balance: Annotated[str, typer.Option(help="also show a recipe's effect on the train part")] = "none",
          seed: int = 0) -> None:
    """Label frequencies, patients, and age/sex/view distributions."""
    import chestaid

    summary = chestaid.stats(path, plot=plot, balance=balance, seed=seed)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, default=int) + "\n")
        return
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    from rich.table import Table

    console.print(f"{summary['images']:,} images, {summary['patients']:,} patients")
    table = Table("label", "images", "frequency")
    for name, count in summary["labels"].items():
        table.add_row(name, f"{count:,}", f"{summary['label_frequency'][name]:.4f}")
    console.print(table)
    age = summary["age"]
    console.print(f"age: mean {age['mean']}, median {age['median']}, range {age['min']}–{age['max']} "
                  f"({age['clipped_over_100']} clipped at 100)")
    console.print(f"sex: {summary['sex']}   view: {summary['view']}")
    if "balance" in summary:
        bal = Table("label", "train before", "train after", title=f"balancing recipe {summary['balance']['recipe']}")
        for name, before in summary["balance"]["train_before"].items():
            bal.add_row(name, f"{before:,}", f"{summary['balance']['train_after'].get(name, 0):,}")
        console.print(bal)
    for p in summary.get("plots", []):
        console.print(f"figure: {p}")

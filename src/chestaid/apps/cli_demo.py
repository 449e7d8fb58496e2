"""The CLI's `demo` command: everything end to end on built-in synthetic data (calls chestaid.apps.demo)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from chestaid.apps.cli_output import console


def demo(task: Annotated[str, typer.Option(help="nih, pneumonia or both")] = "both",
         out: Annotated[Path, typer.Option("--out", help="folder for data, caches and runs")] = Path("chestaid-demo"),
         serve: Annotated[bool, typer.Option("--serve", help="start the web page on the (first) demo run")] = False,
         force: Annotated[bool, typer.Option(
             "--force", help="start over in OUT (removes only what a demo wrote)")] = False,
         images: Annotated[Optional[int], typer.Option(min=200, help="images per task (default 2000 NIH, 1200 "
                                                                     "pneumonia)")] = None,
         size: Annotated[int, typer.Option(min=64, max=512, help="synthetic image size")] = 128,
         epochs: Annotated[Optional[int], typer.Option(
             min=1, help="override the demo configs' epochs")] = None) -> None:
    """Everything end to end on built-in synthetic data: synth → prepare → train → calibrate + thresholds →
    Grad-CAM localisation → evaluate → report.html. Interrupted? Run the same command again to resume."""
    from chestaid.apps.demo import TASKS, run_demo, summary

    tasks = list(TASKS) if task == "both" else [task]
    started = time.perf_counter()
    run_demo(out, tasks, force, {t: images for t in tasks} if images else None, size, epochs)
    console.rule("[bold]chestaid demo: done[/]", align="left")
    console.print(f"synthetic data (phantoms, not radiographs) in {out}; {time.perf_counter() - started:.0f} s in this "
                  "session")
    for row in summary(out, tasks):
        located = f", Grad-CAM pointing game {row['pointing_game']:.2f}" if row["pointing_game"] is not None else ""
        auroc = "test mean AUROC over findings" if row["task"] == "nih" else "test ROC-AUC"
        gate = row["gate"]
        located += (f"; input gate refuses {gate['refused']} of {gate['images']} test images" if gate.get("fitted")
                    else "")
        console.print(f"  {row['task']}: {auroc} {row['test_auroc']:.3f}{located}\n"
                      f"    run    {row['run']}\n    report {row['report']}", highlight=False)
    first = Path(out) / tasks[0] / "run"
    console.print(f"open the web page:  [bold]chestaid serve {first}[/]" +
                  "".join(f"   (or chestaid serve {Path(out) / t / 'run'})" for t in tasks[1:]), highlight=False)
    if serve:
        from chestaid.apps.page.server import serve as run_serve

        run_serve(first)

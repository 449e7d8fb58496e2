"""The CLI's run commands: train, evaluate, calibrate, thresholds, predict, export, explain, compare."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from chestaid.apps.cli_local import print_local
from chestaid.apps.cli_output import console, err, fail


def train(config: Annotated[Optional[Path], typer.Option("--config", help="YAML config (configs/*.yaml)")] = None,
          data: Annotated[Optional[Path], typer.Option("--data", help="a cache, or an NIH/Kaggle root")] = None,
          out: Annotated[Optional[Path], typer.Option("--out", help="the run directory to create")] = None,
          overrides: Annotated[Optional[list[str]], typer.Option("--set", help="key=value, e.g. train.lr=3e-4")] = None,
          resume: Annotated[Optional[Path], typer.Option("--resume", help="continue this run from its newest "
                                                                          "checkpoint")] = None,
          force: Annotated[bool, typer.Option("--force", help="start over in --out (removes only what train "
                                                              "wrote there)")] = False) -> None:
    """Train a model into a run directory (config.yaml, model.safetensors, checkpoints/, train_log.csv)."""
    import chestaid
    from chestaid.api import is_lead_process
    from chestaid.core.run_paths import RunPaths

    if resume is None and out is None:
        fail("--out RUN is required (or --resume RUN)")
    try:
        if resume is not None:
            root = chestaid.train(None, resume, resume=True)
        else:
            root = chestaid.train(data, out, config, overrides or [], force=force)
    except (KeyboardInterrupt, SystemExit) as stop:
        # Lightning ends a fit stopped by Ctrl-C with exit(1) and one stopped by SIGTERM with a SystemExit whose
        # code is None (exit status 0): both are interruptions, said as such, with a failing status
        if isinstance(stop, SystemExit) and stop.code not in (None, 0, 1):
            raise
        sigterm = isinstance(stop, SystemExit) and stop.code is None
        fail(f"{'terminated' if sigterm else 'interrupted'}: `chestaid train --resume {resume or out}` continues "
             "the run from its newest checkpoint", code=143 if sigterm else 130)
    if is_lead_process():  # under DDP every process returns here; one says it
        paths = RunPaths(root)
        console.print(f"run {paths.root}: weights {paths.weights}, per-epoch log {paths.train_log}")


def _parse_params(items: list[str]) -> dict[str, float]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            fail(f"--param expects name=number (e.g. target=0.9), got {item!r}")
    return params


def evaluate(run: Path, split: Annotated[str, typer.Option(
                 help="test, or val (the val_report part); with another dataset's --data: test or all")] = "test",
             data: Annotated[Optional[Path], typer.Option(
                 help="a cache other than the run's; another task's cache (or --label-map) evaluates externally "
                      "into RUN/external/NAME-DIGEST/")] = None,
             label_map: Annotated[Optional[str], typer.Option(
                 help="model=data label pairs for another dataset, e.g. Pneumonia=Pneumonia")] = None,
             since: Annotated[Optional[str], typer.Option(
                 help="with a node's store as --data: only cases received on or after this day (YYYY-MM-DD)")] = None,
             until: Annotated[Optional[str], typer.Option(
                 help="with a node's store as --data: only cases received on or before this day")] = None,
             by_study: Annotated[bool, typer.Option(
                 "--by-study", help="with a node's store as --data: one case per study (per finding its highest "
                                    "score and any flag over its read images; present when any verdict is)")]
             = False) -> None:
    """Every metric on the test split, plots and RUN/report.html (fits calibration and thresholds on validation
    first when the run has none); or, on another dataset, the shared labels (external validation)."""
    import chestaid
    from chestaid.api import with_interval
    from chestaid.core.tasks import headline_metrics

    result = chestaid.evaluate(run, split, data=data, label_map=label_map, since=since, until=until,
                               by_study=by_study)
    if result.get("local"):
        print_local(result)
        return
    if result.get("external"):
        for row in result["per_finding"]:
            console.print(f"external {row['finding']} (= {row['data_label']}): ROC-AUC {with_interval(row, 'roc_auc')}"
                          f", {row['positives']} positives of {row['positives'] + row['negatives']}", highlight=False)
        console.print(f"report {result['report']}")
        return
    summary = result["summary"]
    console.print(f"{result['split']} (95% CIs: ROC-AUC clustered DeLong, the rest resampling patients): " + ", ".join(
        f"{k} {with_interval(summary, k)}" for k in headline_metrics(summary)))
    console.print(f"metrics in {Path(run) / 'metrics'}, figures in {Path(run) / 'plots'}, report {result['report']}")


def calibrate(run: Path, cohort: Annotated[Optional[Path], typer.Option(
                  help="a local labelled cohort to recalibrate on, without retraining: an NIH or Kaggle folder, or "
                       "a node's store (its instances with clinicians' verdicts)")] = None,
              data: Annotated[Optional[Path], typer.Option(help="a cache other than the run's")] = None,
              calib_fraction: Annotated[float, typer.Option(min=0.1, max=0.9)] = 0.5, seed: int = 0,
              bins: Annotated[int, typer.Option(min=2, max=100)] = 15,
              out: Annotated[Optional[Path], typer.Option(help="with --cohort: write a new run version here "
                                                          "(with its lineage); RUN stays as it is")] = None,
              since: Annotated[Optional[str], typer.Option(
                  help="with a store as --cohort: only cases received on or after this day (YYYY-MM-DD)")] = None,
              until: Annotated[Optional[str], typer.Option(
                  help="with a store as --cohort: only cases received on or before this day")] = None) -> None:
    """Fit temperature, Platt and isotonic calibrators per finding on `calib`, keep the best ECE on `val_report`,
    and refit the thresholds on the calibrated scores. Weights are never touched."""
    import chestaid

    result = chestaid.calibrate(run, cohort, data=data, calib_fraction=calib_fraction, seed=seed, bins=bins, out=out,
                                since=since, until=until)
    methods = {name: p["method"] for name, p in result["calibration"].items()}
    console.print(f"calibrated on {result['fitted_on']} ({result['calib_images']} calib / "
                  f"{result['val_report_images']} val_report images): {methods}")
    if out is not None:
        console.print(f"new run version {out} (its parent {run} is unchanged)")


def thresholds(run: Path, policy: Annotated[str, typer.Option(help="youden | f1-precision | seed000 | sensitivity")],
               param: Annotated[Optional[list[str]], typer.Option(
                   "--param", help="e.g. target=0.9 (sensitivity) or p_min=0.3 (f1-precision)")] = None,
               data: Annotated[Optional[Path], typer.Option(help="a cache other than the run's")] = None) -> None:
    """Refit the decision thresholds on validation data (never test), without retraining."""
    import chestaid

    fitted = chestaid.thresholds(run, policy, _parse_params(param or []), data=data)
    console.print(f"thresholds ({fitted.policy}, {fitted.params}): " +
                  ", ".join(f"{k} {v:.3f}" for k, v in fitted.values.items()))


BACKEND_HELP = ("auto (the fastest variant `chestaid export` recorded as passing parity on this CPU, else torch), "
                "torch, onnx, openvino, openvino-bf16 or openvino-int8")


def predict(run: Path, inputs: Annotated[list[Path], typer.Argument(help="image files and/or folders")],
            out: Annotated[Path, typer.Option("--out", help="the worklist CSV to write")] = Path("worklist.csv"),
            cam: Annotated[Optional[Path], typer.Option("--cam", help="folder for heat-map overlays (mirrors the "
                                                                      "input tree)")] = None,
            cam_finding: Annotated[Optional[str], typer.Option(help="heat maps for this finding (default: each "
                                                                     "image's top finding)")] = None,
            cam_rows: Annotated[str, typer.Option(help="heat maps for: all, flagged, or N (the N highest-risk "
                                                       "rows)")] = "all",
            device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
            backend: Annotated[str, typer.Option(help="auto (the fastest variant `chestaid export` checked and timed "
                                                      "on this CPU; else ONNX Runtime when RUN/model.onnx is "
                                                      "current; else torch), torch, onnx, openvino, openvino-bf16 "
                                                      "or openvino-int8")] = "auto",
            batch_size: Annotated[int, typer.Option(min=1)] = 16,
            decode_workers: Annotated[Optional[int], typer.Option(
                min=0, help="processes decoding files while the model scores (default: one per core beyond the "
                            "first, at least 1; 0: in this process)")] = None,
            devices: Annotated[int, typer.Option(
                min=1, help="processes (--device cpu) or GPUs (--device cuda) sharing the files, through "
                            "Lightning's predict loop; the worklist is the same as one process's")] = 1,
            age: Annotated[Optional[float], typer.Option(min=0, max=120)] = None,
            sex: Annotated[Optional[str], typer.Option(help="M or F")] = None,
            view: Annotated[Optional[str], typer.Option(help="PA or AP")] = None) -> None:
    """Score PNG/JPEG/DICOM files into a worklist sorted by calibrated risk (highest first).

    Images the input gate refuses (not a frontal chest X-ray like the training images) are listed apart with
    the reason, unranked; unreadable files are listed with the reason and skipped. Exit 0 when at least one
    image could be read, 1 when none could. Age/sex/view come from a file's DICOM tags; --age/--sex/--view
    only fill what a file lacks (they never override a tag); else neutral defaults. The worklist's *_source
    columns say which."""
    import chestaid

    result = chestaid.predict(run, inputs, out, cam=cam, cam_finding=cam_finding, cam_rows=cam_rows, device=device,
                              backend=backend, batch_size=batch_size, decode_workers=decode_workers,
                              devices=devices, age=age, sex=sex, view=view)
    if not result.lead:  # process 1…N-1 of --devices N: rank 0 wrote the worklist and reports
        return
    console.print(f"worklist {result.out}: {result.scored} image(s) sorted by {result.score}, scored by the {result.backend} "
                  "backend" +
                  (f", {result.heat_maps} heat map(s) in {cam}" if cam else ""))
    if not result.gate:
        err.print("[yellow]warning:[/] this run has no input gate (chestaid calibrate RUN fits one): every "
                  "readable image was scored, chest X-ray or not")
    if result.refused:
        err.print(f"[yellow]refused:[/] {len(result.refused)} image(s) outside what the model was made for, not "
                  f"ranked (listed in {result.refused_csv}):")
        for path, reason in result.refused[:20]:
            err.print(f"  {path}: {reason}", highlight=False)
    if result.skipped:
        err.print(f"[yellow]warning:[/] {len(result.skipped)} file(s) skipped (listed in {result.skipped_csv}):")
        for path, reason in result.skipped[:20]:
            err.print(f"  {path}: {reason}", highlight=False)
    if result.scored == 0 and not result.refused:
        fail("no image could be read", code=1)


def export(run: Path, data: Annotated[Optional[Path], typer.Option(
        "--data", help="the cache whose test split checks parity (default: the run's)")] = None,
           onnx_only: Annotated[bool, typer.Option("--onnx-only", help="write model.onnx only: no OpenVINO "
                                                   "variants, no parity run, auto keeps ONNX Runtime")] = False) -> None:
    """Write RUN/model.onnx (checked against torch) and the CPU backends this machine runs fastest.

    OpenVINO fp32, bf16 (CPUs with AVX512-BF16 or AMX) and int8 (NNCF, calibrated on the run's calib part of
    validation; CPUs with VNNI or AMX), each kept only if it passes parity with torch fp32 on the run's test
    split; RUN/backends/backends.json records the figures and the ms/image of each on this CPU."""
    import chestaid

    exported = chestaid.export(run, data, onnx_only=onnx_only)
    result, record = exported["onnx"], exported["backends"]
    console.print(f"wrote {result['path']}: {result['image_size']} px input, dynamic batch; max |logit difference| "
                  f"vs torch {result['max_abs_logit_difference']:.1e} (limit {exported['parity_limit']:.0e})",
                  highlight=False)
    if record is None:
        return
    speed = next(iter(record["speed"].values()), {})
    ms = speed.get("ms_per_image", {})
    parity = record.get("parity_data")
    console.print(f"backends on {speed.get('machine', {}).get('cpu_model', '?')} (ms/image at batch 1; parity on "
                  + (f"{parity['images']} test images" if parity else "no test data") +
                  f", bounds {exported['parity_bounds']}):", highlight=False)
    for name, entry in record["variants"].items():
        figures = (f"max risk diff {entry['max_risk_difference']:.4f}, AUROC diff "
                   f"{entry['mean_auroc_difference'] if entry.get('mean_auroc_difference') is None else round(entry['mean_auroc_difference'], 4)}, "
                   f"decisions changed {entry['decisions_changed']:.1%}"
                   + ("" if entry.get("gate_verdicts_changed") is None else
                      f", gate verdicts changed {entry['gate_verdicts_changed']:.1%}")) \
            if "max_risk_difference" in entry else ""
        timing = f"{ms[name]:.1f} ms" if name in ms else "-"
        state = "used" if name == speed.get("chosen") else ("usable" if entry.get("passes") else
                                                             f"not used: {entry.get('why_not_used')}")
        console.print(f"  {name:14} {timing:>9}  {state}" + (f"  ({figures})" if figures else ""), highlight=False)


def explain(run: Path, data: Annotated[Path, typer.Option("--data", help="an NIH-layout root with the images")],
            boxes: Annotated[Optional[Path], typer.Option(help="box file (default: DATA/BBox_List_2017.csv)")] = None,
            split: Annotated[str, typer.Option(help="test, val, train or all")] = "test",
            target_layer: Annotated[Optional[list[str]], typer.Option(help="module name(s) for Grad-CAM")] = None,
            threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="map threshold for IoBB")] = 0.5,
            out: Annotated[Optional[Path], typer.Option(help="folder for the results (default RUN/explain)")] = None,
            method: Annotated[str, typer.Option(help="pytorch-grad-cam method: gradcam, gradcam++, hirescam, "
                                                           "layercam, gradcam-elementwise, xgradcam or "
                                                           "eigengradcam")] = "gradcam",
            box_frame: Annotated[int, typer.Option(min=0, help="side of the square frame the boxes are in: 1024 "
                                                              "for NIH's file, whatever size the PNGs are; 0: the "
                                                              "images' own pixels")] = 1024,
            ) -> None:
    """Grad-CAM localisation against boxes: pointing game and IoBB > 0.1/0.25/0.5 per finding (RUN/explain/)."""
    import chestaid

    table = chestaid.localise(run, data, boxes=boxes, split=split, target_layers=target_layer, threshold=threshold,
                              out=out, box_frame=box_frame or None, method=method)
    for warning in table.attrs.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    from rich.table import Table

    shown = Table("finding", "boxes", "pointing game", "IoBB>0.1", "IoBB>0.25", "IoBB>0.5",
                title="Grad-CAM localisation (qualitative explanations scored against boxes)")
    for row in table.to_dict("records"):
        shown.add_row(row["finding"], str(row["boxes"]),
                      *(f"{row[k]:.2f}" for k in ("pointing_game", "iobb>0.1", "iobb>0.25", "iobb>0.5")))
    console.print(shown)
    console.print(f"tables and figure in {out or Path(run) / 'explain'}")


def compare(run_a: Annotated[Path, typer.Argument(help="the reference run")],
            run_b: Annotated[Path, typer.Argument(help="the run compared with it (differences are B - A)")],
            split: Annotated[str, typer.Option(help="test, or val_report")] = "test",
            resamples: Annotated[int, typer.Option(min=100, help="patient bootstrap resamples (mean AUROC)")] = 2000,
            seed: int = 0) -> None:
    """Is run B better than run A on the same test images? Paired DeLong per finding (clustered by patient,
    Holm-adjusted), McNemar on the decisions, mean-AUROC difference with a paired patient bootstrap."""
    import chestaid

    result = chestaid.compare(run_a, run_b, split, resamples=resamples, seed=seed)
    mean = result["mean"]
    if "delta" in mean:
        console.print(f"mean AUROC: A {mean['auc_a']:.3f}, B {mean['auc_b']:.3f}, B - A {mean['delta']:+.3f} "
                      f"(95% CI {mean['ci_low']:+.3f} to {mean['ci_high']:+.3f})", highlight=False)
    for name, r in result["findings"].items():
        if "delta" in r:
            console.print(f"  {name}: {r['auc_a']:.3f} -> {r['auc_b']:.3f}, {r['delta']:+.3f} "
                          f"({r['ci_low']:+.3f} to {r['ci_high']:+.3f}), p {r['p']:.3g}, Holm {r['p_holm']:.3g}",
                          highlight=False)
    console.print(f"comparison in {Path(result['page']).parent}")

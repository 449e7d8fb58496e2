"""The Monitor tab (`chestaid serve RUN --store DIR`): `chestaid monitor` on the node's store, on demand — one row per
window (model, when, instances, alarms) and a signal's Holm-adjusted p-value drawn over the windows, against the
level under which it alarms. Text cells only (plain); nothing from an image or a header is rendered as markup."""

from __future__ import annotations

from datetime import datetime, timezone

import gradio as gr
import pandas as pd

from chestaid.apps.page.inputs import plain
from chestaid.core.errors import ChestaidError
from chestaid.core.figures import rgb

COLUMNS = ["window", "model", "from", "to", "instances", "alarms"]
PERFORMANCE = ["window", "finding", "verdicts", "present", "sensitivity (95% CI)", "specificity (95% CI)",
               "PPV (95% CI)"]


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def monitor_frame(result: dict) -> pd.DataFrame:
    """One row per window of `chestaid.monitor`'s result."""
    rows = [{"window": k, "model": plain(w["model"], 80), "from": _when(w["start"]), "to": _when(w["end"]),
             "instances": w["n"], "alarms": plain(", ".join(w["alarms"]) or "none", 300)}
            for k, w in enumerate(result["windows"])]
    return pd.DataFrame(rows, columns=COLUMNS)


def signal_plot(result: dict, signal: str):
    """A figure of one signal's Holm-adjusted p-value per window (log scale, plain tick labels: no mathtext), with
    the alarm level; the window axis in whole windows, each labelled with its number and start date."""
    from matplotlib.figure import Figure  # no pyplot: no backend or global state is touched
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    windows = result["windows"]
    points = [(k, s["p_holm"]) for k, w in enumerate(windows) for s in w["signals"]
              if s["name"] == signal and s["p_holm"] is not None]
    figure = Figure(figsize=(7, 3))
    ax = figure.subplots()
    if points:
        ax.plot([k for k, _ in points], [max(p, 1e-12) for _, p in points], marker="o")
    ax.axhline(result["level"], color="red", linestyle="--", label=f"alarm below {result['level']:g}")
    ax.set(yscale="log", xlabel="window (number: start)", ylabel="Holm-adjusted p", title=signal)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    step = max(1, len(windows) // 8)
    ticks = list(range(0, len(windows), step))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticklabels([f"{k}: {_when(windows[k]['start'])[:10]}" for k in ticks], fontsize=8)
    ax.set_xlim(-0.5, max(len(windows) - 0.5, 0.5))
    ax.legend(loc="lower left")
    return figure


def performance_frame(result: dict) -> pd.DataFrame:
    """One row per window and finding with verdicts: sensitivity, specificity and PPV with 95% intervals."""
    from chestaid.reporting.monitor_report import figure

    rows = [{"window": k, "finding": plain(name, 60), "verdicts": p["verdicts"], "present": p["positives"],
             "sensitivity (95% CI)": figure(p["sensitivity"]), "specificity (95% CI)": figure(p["specificity"]),
             "PPV (95% CI)": figure(p["ppv"])}
            for k, w in enumerate(result["windows"]) for name, p in (w.get("performance") or {}).items()]
    return pd.DataFrame(rows, columns=PERFORMANCE)


def signal_names(result: dict) -> list[str]:
    names: list[str] = []
    for window in result["windows"]:
        names += [s["name"] for s in window["signals"] if s["name"] not in names]
    return names


def monitor_tab(store_root, level: float = 0.01) -> None:
    """Add the Monitor tab to the Blocks being built."""
    import chestaid

    def run(window: str, chosen: str | None):
        try:
            result = chestaid.monitor(store_root, window or "200", level)
        except ChestaidError as e:
            return (pd.DataFrame(columns=COLUMNS), gr.update(choices=[], value=None), None,
                    pd.DataFrame(columns=PERFORMANCE), str(e))
        names = signal_names(result)
        signal = chosen if chosen in names else (names[0] if names else None)
        note = (f"{len(result['alarms'])} alarm(s) in {len(result['windows'])} window(s); a window's chance of any "
                f"false alarm is at most {level:g} (Holm)") if result["status"] == "monitored" else (
            f"Nothing monitored: {result['status_detail']}")
        note += "".join(f"; {skipped['instances']} instance(s) not monitored: {skipped['why']}"
                        for skipped in result["not_monitored"])
        picture = rgb(signal_plot(result, signal)) if signal else None
        return (monitor_frame(result), gr.update(choices=names, value=signal), picture, performance_frame(result),
                note)

    with gr.Tab("Monitor", elem_id="tab-monitor"):
        gr.Markdown("Drift without labels and performance with verdicts, per window, against the run's "
                    "validation data (`chestaid monitor`). Triage support, not diagnosis: a drift alarm says the "
                    "images or outputs differ from the validation data, not that the model is wrong.")
        with gr.Row():
            window = gr.Textbox(value="200", label="Window (instances, or 12h / 1d / 1w)", max_lines=1,
                                elem_id="monitor-window")
            refresh = gr.Button("Run the monitor", elem_id="monitor-run")
        status = gr.Textbox(label="Result", interactive=False, elem_id="monitor-status")
        table = gr.Dataframe(interactive=False, elem_id="monitor-windows", wrap=True)
        signal = gr.Dropdown([], label="Signal", elem_id="monitor-signal")
        plot = gr.Image(label="Holm-adjusted p-value per window", elem_id="monitor-plot", interactive=False,
                        type="numpy", format="png")
        gr.Markdown("Performance against clinicians' verdicts, per window (95% intervals; where verdicts exist)")
        performance = gr.Dataframe(interactive=False, elem_id="monitor-performance", wrap=True)
        outputs = [table, signal, plot, performance, status]
        refresh.click(run, [window, signal], outputs, api_name=False)
        signal.input(run, [window, signal], outputs, api_name=False)

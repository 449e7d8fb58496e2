"""The Monitor tab (`chestaid serve RUN --store DIR`): `chestaid monitor` on the node's store, on demand — one row per
window (model, when, instances, alarms) and a signal's Holm-adjusted p-value drawn over the windows, against the
level under which it alarms. Text cells only (plain); nothing from an image or a header is rendered as markup."""

from __future__ import annotations

from datetime import datetime, timezone

import gradio as gr
import pandas as pd

from chestaid.apps.page.inputs import plain
from chestaid.core.errors import ChestaidError

COLUMNS = ["window", "model", "from", "to", "instances", "alarms"]


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def monitor_frame(result: dict) -> pd.DataFrame:
    """One row per window of `chestaid.monitor`'s result."""
    rows = [{"window": k, "model": plain(w["model"], 80), "from": _when(w["start"]), "to": _when(w["end"]),
             "instances": w["n"], "alarms": plain(", ".join(w["alarms"]) or "none", 300)}
            for k, w in enumerate(result["windows"])]
    return pd.DataFrame(rows, columns=COLUMNS)


def signal_plot(result: dict, signal: str):
    """A figure of one signal's Holm-adjusted p-value per window (log scale), with the alarm level."""
    from matplotlib.figure import Figure  # no pyplot: no backend or global state is touched

    points = [(k, s["p_holm"]) for k, w in enumerate(result["windows"]) for s in w["signals"]
              if s["name"] == signal and s["p_holm"] is not None]
    figure = Figure(figsize=(7, 3))
    ax = figure.subplots()
    if points:
        ax.plot([k for k, _ in points], [max(p, 1e-12) for _, p in points], marker="o")
    ax.axhline(result["level"], color="red", linestyle="--", label=f"alarm below {result['level']:g}")
    ax.set(yscale="log", xlabel="window", ylabel="Holm-adjusted p", title=signal)
    ax.legend(loc="lower left")
    figure.tight_layout()
    return figure


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
            return pd.DataFrame(columns=COLUMNS), gr.update(choices=[], value=None), None, str(e)
        names = signal_names(result)
        signal = chosen if chosen in names else (names[0] if names else None)
        note = (f"{len(result['alarms'])} alarm(s) in {len(result['windows'])} window(s); a window's chance of any "
                f"false alarm is at most {level:g} (Holm)") + "".join(
            f"; {skipped['instances']} instance(s) not monitored: {skipped['why']}" for skipped in result["not_monitored"])
        return (monitor_frame(result), gr.update(choices=names, value=signal),
                signal_plot(result, signal) if signal else None, note)

    with gr.Tab("Monitor", elem_id="tab-monitor"):
        gr.Markdown("Drift without labels and performance with verdicts, per window, against the run's "
                    "validation data (`chestaid monitor`).")
        with gr.Row():
            window = gr.Textbox(value="200", label="Window (instances, or 12h / 1d / 1w)", max_lines=1,
                                elem_id="monitor-window")
            refresh = gr.Button("Run the monitor", elem_id="monitor-run")
        status = gr.Textbox(label="Result", interactive=False, elem_id="monitor-status")
        table = gr.Dataframe(interactive=False, elem_id="monitor-windows", wrap=True)
        signal = gr.Dropdown([], label="Signal", elem_id="monitor-signal")
        plot = gr.Plot(elem_id="monitor-plot")
        refresh.click(run, [window, signal], [table, signal, plot, status], api_name=False)
        signal.input(run, [window, signal], [table, signal, plot, status], api_name=False)

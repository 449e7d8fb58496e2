"""`python interrupted_train.py KIND N SIGNAL -- chestaid train ARGS`: run the CLI's train command and send this
process SIGNAL at a chosen moment: at the Nth training batch (batch), validation batch (val), complete
checkpoint file (ckpt: after its rename, so N=3 of a tiny run lands between best.ckpt and last.ckpt of one
epoch), weights export (weights: after model.safetensors is written), or as the input gate or the model card
is about to be written (gate, card). Used by tests/test_interrupt.py."""

from __future__ import annotations

import os
import signal
import sys

from chestaid.training import fit, module, run_log
from chestaid.workflows import train

kind, n, sig = sys.argv[1], int(sys.argv[2]), getattr(signal, sys.argv[3])
seen = 0
# Ctrl-C as at a terminal: a process started in the background by a non-interactive shell inherits SIGINT
# ignored (POSIX), and would then train on untouched
signal.signal(signal.SIGINT, signal.default_int_handler)


def hit() -> None:
    global seen
    seen += 1
    if seen == n:
        os.kill(os.getpid(), sig)


def after(owner, name: str) -> None:
    real = getattr(owner, name)

    def wrapped(*args, **kwargs):
        result = real(*args, **kwargs)
        hit()
        return result

    setattr(owner, name, wrapped)


def before(owner, name: str) -> None:
    real = getattr(owner, name)

    def wrapped(*args, **kwargs):
        hit()
        return real(*args, **kwargs)

    setattr(owner, name, wrapped)


{"batch": lambda: before(module.ChestModule, "training_step"),
 "val": lambda: before(module.ChestModule, "validation_step"),
 "ckpt": lambda: after(fit.AtomicCheckpointIO, "save_checkpoint"),
 "weights": lambda: after(run_log, "save_weights"),
 "gate": lambda: before(train, "fit_input_gate"),
 "card": lambda: before(train, "write_model_card")}[kind]()
sys.argv = ["chestaid", *sys.argv[sys.argv.index("--") + 2:]]

from chestaid.apps.cli import main  # noqa: E402

main()

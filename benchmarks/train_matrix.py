"""Which threat a model was trained against vs which threats it resists (the mister_ed finding).

Trains three models on the bundled MNIST subset with ``mistered train`` (standard, L∞-only
adversarial, combined-threat adversarial), then measures each one's held-out accuracy under each
evaluation threat with PGD, and writes the table into the ``train_matrix`` section of
``benchmarks/RESULTS.md``. Run: ``python benchmarks/train_matrix.py`` (about 20 CPU minutes);
``--skip-training`` re-evaluates models already in ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from mistered.data import load_dataset
from mistered.device import describe_device
from mistered.models import load_model
from mistered.threats import parse_threat
from mistered.train import held_out_accuracy

__all__: list[str] = []

LINF = "linf(0.2)"
COMBINED = f"flow(0.05)>>affine(10deg,0.1)>>{LINF}"
COMMON = ["--optimizer", "adam", "--lr", "0.001", "--attack-steps", "5", "--eval-n", "100", "--seed", "0",
          "--device", "cpu", "--no-progress"]
#: row name -> extra ``mistered train`` arguments
TRAININGS = {"standard": [], f"adversarial {LINF}": ["--threat", LINF], f"adversarial {COMBINED}": ["--threat", COMBINED]}
#: column name -> threat spec
EVALUATIONS = {"clean": None, LINF: LINF, "stadv flow(0.05)": "flow(0.05)", "rotation(10deg)": "rotation(10deg)",
               "affine(10deg,0.1)": "affine(10deg,0.1)", "combined (no LPIPS)": COMBINED}


def _write_section(text: str) -> None:
    path = Path(__file__).with_name("RESULTS.md")
    content = path.read_text()
    pattern = re.compile(r"(<!-- train_matrix:start -->\n).*?(<!-- train_matrix:end -->)", re.S)
    path.write_text(pattern.sub(lambda m: m.group(1) + text + "\n" + m.group(2), content))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="mistered-out/train-matrix")
    parser.add_argument("--eval-n", type=int, default=500)
    parser.add_argument("--eval-steps", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    commands, seconds = {}, {}
    for row, extra in TRAININGS.items():
        out = Path(args.out) / re.sub(r"[^a-z0-9]+", "-", row.lower()).strip("-")
        command = ["mistered", "train", *extra, "--epochs", str(args.epochs), *COMMON, "--out", str(out)]
        commands[row] = (command, out)
        if not args.skip_training:
            logging.info("running %s", " ".join(command))
            start = time.perf_counter()
            subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            seconds[row] = time.perf_counter() - start
    test = load_dataset("mnist-5k", "test").subset(args.eval_n)
    table: dict[str, list[float]] = {}
    for row, (command, out) in commands.items():
        model = load_model(str(out / "model.pt"), device="cpu")
        table[row] = []
        for column, spec in EVALUATIONS.items():
            threat = parse_threat(spec) if spec else None
            acc = held_out_accuracy(model, test, threat, attack_steps=args.eval_steps, seed=1)
            logging.info("%s under %s: %.3f", row, column, acc)
            table[row].append(acc)
    best = [max(column) for column in zip(*table.values())]
    lines = ["| trained against | train time (s) | " + " | ".join(EVALUATIONS) + " |", "|" + "---|" * (len(EVALUATIONS) + 2)]
    for row, accs in table.items():
        cells = [f"**{a:.3f}**" if a == b else f"{a:.3f}" for a, b in zip(accs, best)]
        took = f"{seconds[row]:.0f}" if row in seconds else "-"
        lines.append(f"| {row} | {took} | " + " | ".join(cells) + " |")
    cmds = "\n".join(shlex.join(c) for c, _ in commands.values())
    text = (f"Accuracy on the first {args.eval_n} bundled MNIST test digits, under PGD ({args.eval_steps} steps, 1 restart) "
            f"inside each threat; `mnist-cnn` trained on the 4,000 bundled training digits "
            f"({describe_device(torch.device('cpu'))}, shared 2-core machine); best per column in bold. The LPIPS-bounded "
            f"`combined` preset is left out of training: its attack costs about 7 s per batch of 64 on this CPU "
            f"(the same chain without the LPIPS bound: 0.2 s).\n\n" + "\n".join(lines)
            + f"\n\nProduced by `python benchmarks/train_matrix.py --epochs {args.epochs} --out {args.out}`, which ran:\n\n```\n{cmds}\n```\n")
    _write_section(text)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

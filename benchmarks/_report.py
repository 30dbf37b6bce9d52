"""Shared by every benchmark: describe the machine and rewrite one section of ``benchmarks/RESULTS.md``.

Usage from a benchmark script::

    from _report import machine_description, update_section
    update_section("attack_speed", markdown_text)   # between <!-- attack_speed:start/end --> markers
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path

import torch

__all__ = ["RESULTS_PATH", "machine_description", "update_section"]

RESULTS_PATH = Path(__file__).with_name("RESULTS.md")


def machine_description(device: torch.device | None = None) -> str:
    """One line: date, CPU/GPU, threads, torch version."""
    device = device or torch.device("cpu")
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    date = _dt.date.today().isoformat()
    return f"{date}, {device.type}: {hardware}, torch {torch.__version__}, Python {platform.python_version()}"


def update_section(name: str, markdown: str, path: Path = RESULTS_PATH) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` (appending the section if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{start}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text.rstrip()}\n\n{block}\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

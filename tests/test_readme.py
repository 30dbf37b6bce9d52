"""The README's Python example runs as written and its claims in comments hold."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs_and_its_comments_hold():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # the documented example, verbatim
    result, model, data = namespace["result"], namespace["model"], namespace["data"]
    with torch.no_grad():
        fooled = model(result.x_adv).argmax(1) != data.labels
    assert torch.equal(result.success, fooled)
    assert bool((result.distances["lpips"] <= 0.05 + 1e-6).all())
    assert {"0.flow_linf", "1.angle_deg", "2.linf"} <= set(result.sizes)

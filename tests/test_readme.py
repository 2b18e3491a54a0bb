"""The README's YAML snippets are the example files, word for word: copy-paste gets what CI validates."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_yaml_block_is_an_example_file():
    readme = (ROOT / "README.md").read_text()
    examples = {p.name: p.read_text().rstrip("\n") for p in (ROOT / "examples").glob("*.yaml")}
    blocks = re.findall(r"```yaml\n(.*?)\n```", readme, re.S)
    assert blocks
    for block in blocks:
        first = block.splitlines()[0]
        match = [n for n, text in examples.items() if text.splitlines()[0] == first]
        if not match:
            continue  # a snippet of its own (values, a step), not an example file
        assert block == examples[match[0]], f"README's copy of examples/{match[0]} is out of date"

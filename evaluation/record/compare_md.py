"""Print a `kscand compare --json FILE` result as the Markdown table docs use.

    .venv/bin/python evaluation/record/compare_md.py out/redis-zipf.json
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from kscand.evaluation.report import markdown_table


def main() -> int:
    spec = importlib.util.spec_from_file_location(
        "make_docs", Path(__file__).resolve().parents[1] / "make_docs.py")
    if spec is None or spec.loader is None or len(sys.argv) != 2:
        print("usage: compare_md.py FILE.json", file=sys.stderr)
        return 2
    make_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_docs)
    try:
        data = json.loads(Path(sys.argv[1]).read_text())
    except (OSError, ValueError) as err:
        print(f"compare_md: {err}", file=sys.stderr)
        return 2
    print(markdown_table(make_docs.comparison_of(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

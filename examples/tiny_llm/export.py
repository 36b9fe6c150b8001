"""Regenerate the tiny models this example runs (needs torch: pip install 'gimletc[torch]').

    python examples/tiny_llm/export.py

writes `tiny-llama.onnx` (4 layers, hidden 64, 4 query / 2 KV heads, vocab 256,
seeded weights; layers after the first have small output projections) and
`tiny-llama-draft.onnx` (its embedding, first layer and head: a draft that
agrees with it often), both exported with torch's dynamo exporter. The same
seed gives the same weights, so the committed files can be checked against a
fresh export (tests/test_importers.py does).

`python examples/tiny_llm/export.py --llama-1b-shape` writes `llama-1b-shape.onnx`: Llama-3.2-1B's
layer shapes with two layers and a 16,384-token vocabulary (`gimletc.importers.tiny.LLAMA_1B_SHAPE`),
its 720 MiB of weights seeded (generated where the model runs), so the file is about 110 KB.
Exporting it takes about a minute and 3 GB of memory.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gimletc.importers.tiny import LLAMA_1B_SHAPE, TinyConfig, build, draft_of, export_onnx

HERE = Path(__file__).parent
CONFIG = TinyConfig(name="tiny-llama", layers=4, hidden=64, heads=4, kv_heads=2, head_dim=16, ffn=128, vocab=256,
                    seed=0, deep_scale=0.1)


def main() -> None:
    if "--llama-1b-shape" in sys.argv[1:]:
        export_onnx(build(LLAMA_1B_SHAPE), HERE / "llama-1b-shape.onnx", seeded=True)
        print(f"wrote {HERE / 'llama-1b-shape.onnx'}")
        return
    target = build(CONFIG)
    export_onnx(target, HERE / "tiny-llama.onnx")
    export_onnx(draft_of(target, layers=1, name="tiny-llama-draft"), HERE / "tiny-llama-draft.onnx")
    print(f"wrote {HERE / 'tiny-llama.onnx'} and {HERE / 'tiny-llama-draft.onnx'}")


if __name__ == "__main__":
    main()

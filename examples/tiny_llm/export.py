"""Regenerate the tiny models this example runs (needs torch: pip install 'gimletc[torch]').

    python examples/tiny_llm/export.py

writes `tiny-llama.onnx` (4 layers, hidden 64, 4 query / 2 KV heads, vocab 256,
seeded weights; layers after the first have small output projections) and
`tiny-llama-draft.onnx` (its embedding, first layer and head: a draft that
agrees with it often), both exported with torch's dynamo exporter. The same
seed gives the same weights, so the committed files can be checked against a
fresh export (tests/test_importers.py does).
"""

from __future__ import annotations

from pathlib import Path

from gimletc.importers.tiny import TinyConfig, build, draft_of, export_onnx

HERE = Path(__file__).parent
CONFIG = TinyConfig(name="tiny-llama", layers=4, hidden=64, heads=4, kv_heads=2, head_dim=16, ffn=128, vocab=256,
                    seed=0, deep_scale=0.1)


def main() -> None:
    target = build(CONFIG)
    export_onnx(target, HERE / "tiny-llama.onnx")
    export_onnx(draft_of(target, layers=1, name="tiny-llama-draft"), HERE / "tiny-llama-draft.onnx")
    print(f"wrote {HERE / 'tiny-llama.onnx'} and {HERE / 'tiny-llama-draft.onnx'}")


if __name__ == "__main__":
    main()

"""Scenario: gpt-oss-120b at 8K input / 1K output, speculative, the draft on d-Matrix Corsair and B200s verifying.

The published case (Gimlet Labs with d-Matrix; Chipstrat, "An Interview with the Gimlet Labs Team About
Heterogeneous Inference for AI Agents", 2026): a Corsair-drafted, B200-verified deployment shifts the
throughput-vs-interactivity Pareto frontier about 4x over GPU-only speculative decoding with the same draft
on GPU at equivalent energy. Their draft has 1.6B parameters and is not in the catalog; llama-3.2-1b
(1.23B) stored as MXINT8 (1.27 GB, within Corsair's 2 GB SRAM) stands in for its size only (a real draft
must share gpt-oss's tokenizer). On a B200 the same weights run as int8 (the catalog's fallback for
MXINT8), the same bytes.

Acceptance 0.7 per drafted token, fixed before the scenario was run (docs/scenarios.md says where it comes
from): a draft on another chip is a standalone small model, not an EAGLE head.

    gimletc search examples/scenarios/gpt_oss_corsair.py -c examples/scenarios/clusters/search/b200_corsair.yaml \\
        --slo-ttft-ms 2000 --slo-tpot-ms 5 --modes spec -n 400 --configs 3
"""

from __future__ import annotations

from gimletc import AgentGraph

ACCEPTANCE = 0.7

g = AgentGraph("gpt-oss-corsair")
prompt = g.input("prompt", tokens=8192)
reply = g.llm("chat", model="gpt-oss-120b", prompt=[prompt], output_tokens=1024,
              draft="llama-3.2-1b@mxint8", acceptance=ACCEPTANCE)
g.output("reply", [reply])
graph = g.build()

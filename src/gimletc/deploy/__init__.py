"""Deployment: a plan written for the serving engines people run, and a benchmark that measures it.

- `description`: the typed description of a deployment (engine groups, the parts no engine runs,
  CPU workers) built from a plan (`from_plan`) or a saved search result (`from_search`);
- `request`: the request shape the benchmark replays (calls, token counts, loops, tools);
- `vllm`, `sglang`, `dynamo`: each engine's launch commands and configs (Dynamo: the Kubernetes
  manifest), with the engine versions their flags were checked against;
- `write`: the output folder of `gimletc deploy`, written whole or not at all;
- `bench_client`: the standalone benchmark script the folder carries (standard library only);
- `compare`: a prediction (`gimletc simulate --json`) against a measurement (the benchmark's output).
"""

from __future__ import annotations

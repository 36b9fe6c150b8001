// partition-layers: every LLM call becomes a pipeline of layer stages (the fewest whose memory fits the
// largest accelerator, or exactly `stages`), cut where the per-layer times balance. The prefill is a chain
// of stages passing activations; the decode is a loop over output tokens whose body runs the stages in turn.
// Each stage holds its own slice of the KV cache. Needs a cluster; keeps the model level.
// RUN: gimletc opt %s --pipeline partition-layers --cluster %S/../clusters/two_h100.yaml | filecheck %s
// RUN: gimletc opt %s --pipeline "partition-layers{phases=prefill,stages=2}" --cluster %S/../clusters/two_h100.yaml | filecheck %s --check-prefix=PREFILL
// RUN: not gimletc opt %s --pipeline "partition-layers{stages=1}" --cluster %S/../clusters/two_h100.yaml 2>&1 | filecheck %s --check-prefix=ONE
// RUN: not gimletc opt %s --pipeline partition-layers 2>&1 | filecheck %s --check-prefix=NOCLUSTER

module attributes {gimlet.level = "model", gimlet.name = "big"} {
  %q = "agent.input"() {sym_name = "q", tokens = 1000 : i64} : () -> !gimlet.tokens<1000>
  %a.kv = "model.prefill"(%q) {ctx = 0 : i64, model = "llama-3.1-70b", of = "a", sym_name = "a.prefill", tokens = 1000 : i64} : (!gimlet.tokens<1000>) -> !gimlet.kv<327680000>
  %a = "model.decode"(%a.kv) {ctx = 1000 : i64, model = "llama-3.1-70b", of = "a", sym_name = "a.decode", tokens = 50 : i64} : (!gimlet.kv<327680000>) -> !gimlet.tokens<50>
  "agent.output"(%a) {sym_name = "o"} : (!gimlet.tokens<50>) -> ()
}

// llama-3.1-70b: 80 layers, hidden 8192, 8 KV heads of 128 dims, bf16. KV per token and layer:
// 8 x 128 x 2 (K, V) x 2 bytes = 4096; the whole cache above is 80 x 4096 x 1000 = 327680000 bytes.
// 140 GB of weights fit on no 80 GB H100: two stages, each with half the layers and half the cache.
// Activations crossing a cut: 1000 tokens x 8192 x 2 bytes = 16384000; one decode token's: 16384.
// CHECK:      module attributes {gimlet.level = "model", gimlet.name = "big"} {
// CHECK-NEXT:   %q = "agent.input"()
// CHECK-NEXT:   %a.act0, %a.kv0 = "model.prefill"(%q) {ctx = 0 : i64, layers = [0 : i64, [[CUT:[0-9]+]] : i64], {{.*}}stage = 0 : i64, stages = 2 : i64, sym_name = "a.prefill.s0", tokens = 1000 : i64, unit = "a.s0", variant = "layers"} : (!gimlet.tokens<1000>) -> (!gimlet.act<16384000>, !gimlet.kv<{{[0-9]+}}>)
// CHECK-NEXT:   %a.first, %a.kv1 = "model.prefill"(%a.act0) {ctx = 0 : i64, layers = [[[CUT]] : i64, 80 : i64], {{.*}}stage = 1 : i64, stages = 2 : i64, sym_name = "a.prefill.s1", tokens = 1000 : i64, unit = "a.s1", variant = "layers"} : (!gimlet.act<16384000>) -> (!gimlet.tokens<1>, !gimlet.kv<{{[0-9]+}}>)
// The decode: 50 steps, each at the mean context 1000 + 50/2 = 1025, stage 0 then stage 1.
// CHECK-NEXT:   %a = "agent.loop"(%a.first) ({
// CHECK-NEXT:   ^bb0(%a.tok: !gimlet.tokens<1>):
// CHECK-NEXT:     %a.dact0 = "model.decode"(%a.tok, %a.kv0) {batch = 1 : i64, ctx = 1025 : i64, layers = [0 : i64, [[CUT]] : i64], {{.*}}sym_name = "a.decode.s0", tokens = 1 : i64, unit = "a.s0", variant = "layers"} : {{.*}} -> !gimlet.act<16384>
// CHECK-NEXT:     %a.next = "model.decode"(%a.dact0, %a.kv1) {batch = 1 : i64, ctx = 1025 : i64, layers = [[[CUT]] : i64, 80 : i64], {{.*}}sym_name = "a.decode.s1", tokens = 1 : i64, unit = "a.s1", variant = "layers"} : {{.*}} -> !gimlet.tokens<1>
// CHECK-NEXT:     "agent.yield"(%a.next)
// CHECK-NEXT:   }) {expected = 50.0 : f64, max = 50 : i64, sym_name = "a.decode"}
// CHECK-NEXT:   "agent.output"(%a)

// phases=prefill: only the prefill is pipelined; the decode reads both stages' caches on one device group.
// PREFILL:      %a.act0, %a.kv0 = "model.prefill"(%q) {{.*}}unit = "a.prefill.s0", variant = "layers"}
// PREFILL-NEXT: %a.first, %a.kv1 = "model.prefill"(%a.act0) {{.*}}unit = "a.prefill.s1", variant = "layers"}
// PREFILL-NEXT: %a = "model.decode"(%a.kv0, %a.kv1) {ctx = 1000 : i64, {{.*}}partition = "phase", sym_name = "a.decode", tokens = 50 : i64, variant = "layers"}
// PREFILL-NOT:  agent.loop

// ONE: gimletc: error: pass 'partition-layers': option stages=1 is not 0 or an int >= 2
// NOCLUSTER: gimletc: error: pipeline 'partition-layers': pass 'partition-layers' needs a cluster, and none was given

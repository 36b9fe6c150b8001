// Partitioning variant "attn-ffn" (MegaScale-Infer, Step-3): attention next to the KV cache on one H200, the MoE
// FFN next to the experts on the other (pinned by placement unit); every layer's activations go there and
// back, for each of the two micro-batches, which ping-pong so each GPU computes while the other waits.
// RUN: gimletc opt %s --pipeline "place{partitions=attn-ffn},insert-transfers,schedule,overlap" --cluster %S/../clusters/two_h200.yaml --pin a.attn=g.h200.0 --pin a.ffn=g.h200.1 | filecheck %s

module attributes {gimlet.level = "model", gimlet.name = "moe"} {
  %q = "agent.input"() {sym_name = "q", tokens = 500 : i64} : () -> !gimlet.tokens<500>
  %a.kv = "model.prefill"(%q) {batch = 64 : i64, ctx = 0 : i64, model = "gpt-oss-20b", of = "a", sym_name = "a.prefill", tokens = 500 : i64} : (!gimlet.tokens<500>) -> !gimlet.kv<987758592>
  %a = "model.decode"(%a.kv) {batch = 64 : i64, ctx = 500 : i64, model = "gpt-oss-20b", of = "a", sym_name = "a.decode", tokens = 20 : i64} : (!gimlet.kv<987758592>) -> !gimlet.tokens<20>
  "agent.output"(%a) {sym_name = "o"} : (!gimlet.tokens<20>) -> ()
}

// CHECK:      module attributes {gimlet.level = "exec", gimlet.name = "moe", gimlet.objective = "latency"} {
// CHECK:        %a.kv, %a.first, %a.prefill.done = "exec.compute"(%q.to.g.h200.0) {{.*}}device = "g.h200.0", {{.*}}variant = "attn-ffn"}
// CHECK-NEXT:   %a, %a.mb1 = "agent.loop"(%a.first, %a.first) ({
// CHECK-NEXT:   ^bb0(%a.tok0: !gimlet.tokens<1>, %a.tok1: !gimlet.tokens<1>):
// Micro-batch 0's attention of layer 0, its 32 x 2880 x 2 = 184320 bytes to the FFN GPU, its FFN there.
// CHECK-NEXT:     %a.a0.m0, %a.attn0.m0.done = "exec.compute"(%a.tok0{{.*}}device = "g.h200.0", {{.*}}kind_of = "model.attention", {{.*}}microbatch = 0 : i64,
// CHECK-NEXT:     %a.a0.m0.to.g.h200.1.sent = "exec.send"(%a.a0.m0{{.*}}) {bytes = 184320.0 : f64, {{.*}}dst = "g.h200.1", {{.*}}route = "direct",
// CHECK-NEXT:     %a.a0.m0.to.g.h200.1, %a.a0.m0.to.g.h200.1.recv = "exec.recv"(%a.a0.m0.to.g.h200.1.sent
// CHECK-NEXT:     %a.f0.m0, %a.ffn0.m0.done = "exec.compute"(%a.a0.m0.to.g.h200.1{{.*}}device = "g.h200.1", {{.*}}kind_of = "model.ffn", {{.*}}microbatch = 0 : i64,
// Micro-batch 1's attention runs on the first GPU while micro-batch 0's FFN runs on the second.
// CHECK-NEXT:     %a.a0.m1, %a.attn0.m1.done = "exec.compute"(%a.tok1{{.*}}device = "g.h200.0", {{.*}}microbatch = 1 : i64,
// CHECK-NEXT:     %a.a0.m1.to.g.h200.1.sent = "exec.send"(%a.a0.m1
// CHECK-NEXT:     %a.a0.m1.to.g.h200.1, %a.a0.m1.to.g.h200.1.recv = "exec.recv"(%a.a0.m1.to.g.h200.1.sent
// CHECK-NEXT:     %a.f0.m1, %a.ffn0.m1.done = "exec.compute"(%a.a0.m1.to.g.h200.1{{.*}}device = "g.h200.1",
// Layer 0's FFN output comes back for layer 1's attention.
// CHECK-NEXT:     %a.f0.m0.to.g.h200.0.sent = "exec.send"(%a.f0.m0{{.*}}) {bytes = 184320.0 : f64, {{.*}}dst = "g.h200.0",
// CHECK-NEXT:     %a.f0.m0.to.g.h200.0, %a.f0.m0.to.g.h200.0.recv = "exec.recv"(%a.f0.m0.to.g.h200.0.sent
// CHECK-NEXT:     %a.a1.m0, %a.attn1.m0.done = "exec.compute"(%a.f0.m0.to.g.h200.0, %a.kv{{.*}}device = "g.h200.0", {{.*}}layers = [1 : i64, 2 : i64],
// CHECK:          %a.next1, %a.ffn23.m1.done = "exec.compute"({{.*}}device = "g.h200.1", {{.*}}layers = [23 : i64, 24 : i64],
// CHECK:          "agent.yield"(%a.next0{{.*}}, %a.next1{{.*}})
// CHECK-NEXT:   }) {expected = 20.0 : f64, max = 20 : i64, sym_name = "a.decode"}

// Partitioning variant "layers": a 70B model on two 80 GB H100s as a two-stage pipeline, stage 0 on one GPU and
// stage 1 on the other (pinned by placement unit). Activations cross the cut: the prefill's once, each
// decode step's one token at a time; the next token goes back to stage 0 for the following step.
// RUN: gimletc opt %s --pipeline "place{partitions=layers},insert-transfers,schedule,overlap" --cluster %S/../clusters/two_h100.yaml --pin a.s0=g.h100-sxm.0 --pin a.s1=g.h100-sxm.1 | filecheck %s

module attributes {gimlet.level = "model", gimlet.name = "big"} {
  %q = "agent.input"() {sym_name = "q", tokens = 1000 : i64} : () -> !gimlet.tokens<1000>
  %a.kv = "model.prefill"(%q) {ctx = 0 : i64, model = "llama-3.1-70b", of = "a", sym_name = "a.prefill", tokens = 1000 : i64} : (!gimlet.tokens<1000>) -> !gimlet.kv<327680000>
  %a = "model.decode"(%a.kv) {ctx = 1000 : i64, model = "llama-3.1-70b", of = "a", sym_name = "a.decode", tokens = 50 : i64} : (!gimlet.kv<327680000>) -> !gimlet.tokens<50>
  "agent.output"(%a) {sym_name = "o"} : (!gimlet.tokens<50>) -> ()
}

// CHECK:      module attributes {gimlet.level = "exec", gimlet.name = "big", gimlet.objective = "latency"} {
// CHECK:        %a.act0, %a.kv0, %a.prefill.s0.done = "exec.compute"(%q.to.g.h100-sxm.0) {{.*}}device = "g.h100-sxm.0", devices = ["g.h100-sxm.0"], {{.*}}stage = 0 : i64, stages = 2 : i64, {{.*}}variant = "layers"}
// 1000 tokens x 8192 hidden x 2 bytes = 16384000 bytes of activations at the cut.
// CHECK-NEXT:   %a.act0.to.g.h100-sxm.1.sent = "exec.send"(%a.act0) {bytes = 16384000.0 : f64, {{.*}}dst = "g.h100-sxm.1", {{.*}}src = "g.h100-sxm.0",
// CHECK-NEXT:   %a.act0.to.g.h100-sxm.1, %a.act0.to.g.h100-sxm.1.recv = "exec.recv"(%a.act0.to.g.h100-sxm.1.sent
// CHECK-NEXT:   %a.first, %a.kv1, %a.prefill.s1.done = "exec.compute"(%a.act0.to.g.h100-sxm.1{{.*}}device = "g.h100-sxm.1", devices = ["g.h100-sxm.1"], {{.*}}stage = 1 : i64,
// CHECK-NEXT:   %a = "agent.loop"(%a.first) ({
// CHECK-NEXT:   ^bb0(%a.tok: !gimlet.tokens<1>):
// The token from stage 1 back to stage 0: 4 bytes.
// CHECK-NEXT:     %a.tok.to.g.h100-sxm.0.sent = "exec.send"(%a.tok) {bytes = 4.0 : f64, {{.*}}dst = "g.h100-sxm.0", {{.*}}src = "g.h100-sxm.1",
// CHECK-NEXT:     %a.tok.to.g.h100-sxm.0, %a.tok.to.g.h100-sxm.0.recv = "exec.recv"(%a.tok.to.g.h100-sxm.0.sent
// CHECK-NEXT:     %a.dact0, %a.decode.s0.done = "exec.compute"(%a.tok.to.g.h100-sxm.0, %a.kv0{{.*}}device = "g.h100-sxm.0",
// One token's activations: 8192 x 2 = 16384 bytes.
// CHECK-NEXT:     %a.dact0.to.g.h100-sxm.1.sent = "exec.send"(%a.dact0{{.*}}) {bytes = 16384.0 : f64, {{.*}}dst = "g.h100-sxm.1",
// CHECK-NEXT:     %a.dact0.to.g.h100-sxm.1, %a.dact0.to.g.h100-sxm.1.recv = "exec.recv"(%a.dact0.to.g.h100-sxm.1.sent
// CHECK-NEXT:     %a.next, %a.decode.s1.done = "exec.compute"(%a.dact0.to.g.h100-sxm.1, %a.kv1{{.*}}device = "g.h100-sxm.1",
// CHECK-NEXT:     "agent.yield"(%a.next)
// CHECK-NEXT:   }) {expected = 50.0 : f64, max = 50 : i64, sym_name = "a.decode"}

// Partitioning variant "whole": an LLM call's prefill and decode stay together, one placement unit, so its
// KV cache never moves. Model-level IR in, the rest of the default pipeline, exec-level IR out.
// RUN: gimletc opt %s --pipeline "place{partitions=whole},insert-transfers,schedule,overlap" --cluster %S/../clusters/h200_mi300x.yaml --pin answer=n.h200.0 | filecheck %s

module attributes {gimlet.level = "model", gimlet.name = "chat"} {
  %q = "agent.input"() {sym_name = "q", tokens = 1000 : i64} : () -> !gimlet.tokens<1000>
  %answer.kv = "model.prefill"(%q) {ctx = 0 : i64, model = "llama-3.1-8b", of = "answer", sym_name = "answer.prefill", tokens = 1200 : i64} : (!gimlet.tokens<1000>) -> !gimlet.kv<157286400>
  %answer = "model.decode"(%answer.kv) {ctx = 1200 : i64, model = "llama-3.1-8b", of = "answer", sym_name = "answer.decode", tokens = 100 : i64} : (!gimlet.kv<157286400>) -> !gimlet.tokens<100>
  "agent.output"(%answer) {sym_name = "out"} : (!gimlet.tokens<100>) -> ()
}

// CHECK:      module attributes {gimlet.level = "exec", gimlet.name = "chat", gimlet.objective = "latency"} {
// CHECK-NEXT:   %q, %q.done = "exec.compute"() {device = "n.host",
// CHECK-NEXT:   %q.to.n.h200.0.sent = "exec.send"(%q) {
// CHECK-NEXT:   %q.to.n.h200.0, %q.to.n.h200.0.recv = "exec.recv"(%q.to.n.h200.0.sent) {
// CHECK-NEXT:   %answer.kv, %answer.prefill.done = "exec.compute"(%q.to.n.h200.0) {{.*}}device = "n.h200.0", {{.*}}kind_of = "model.prefill", {{.*}}variant = "whole"}
// The decode reads the cache where the prefill left it: no send, no receive, no conversion in between.
// CHECK-NEXT:   %answer, %answer.decode.done = "exec.compute"(%answer.kv, %answer.prefill.done) {{.*}}device = "n.h200.0", {{.*}}kind_of = "model.decode", {{.*}}variant = "whole"}
// CHECK-NEXT:   %answer.to.n.host.sent = "exec.send"(%answer) {
// CHECK-NEXT:   %answer.to.n.host, %answer.to.n.host.recv = "exec.recv"(%answer.to.n.host.sent) {
// CHECK-NEXT:   %out.done = "exec.compute"(%answer.to.n.host{{.*}}) {device = "n.host", {{.*}}kind_of = "agent.output"
// CHECK-NEXT: }

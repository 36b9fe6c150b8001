// verify() at exec level: no value is used on a device other than the one holding it without a transfer.
// This is what `expand-llm,place,schedule` would make (the manager refuses that order; run the passes by
// hand and this is their output): the prompt lives on the host, the prefill reads it on the GPU, and nothing
// moves it. Reading it back is an error, and so is any pipeline over it.
// RUN: not gimletc opt %s 2>&1 | filecheck %s
// RUN: not gimletc opt %s --pipeline overlap 2>&1 | filecheck %s

module attributes {gimlet.level = "exec", gimlet.name = "chat", gimlet.objective = "latency"} {
  %q, %q.done = "exec.compute"() {device = "g.host", devices = ["g.host#0"], kind_of = "agent.input", of = "q", seconds = 0.0 : f64, sym_name = "q", tokens = 1000 : i64} : () -> (!gimlet.tokens<1000>, !async.token)
  %answer.kv, %answer.prefill.done = "exec.compute"(%q) {ctx = 0 : i64, device = "g.h200.0", devices = ["g.h200.0"], kind_of = "model.prefill", llm = "answer", model = "llama-3.1-8b", of = "answer.prefill", seconds = 0.03153446597282434 : f64, sym_name = "answer.prefill", tokens = 1200 : i64, variant = "whole"} : (!gimlet.tokens<1000>) -> (!gimlet.kv<157286400>, !async.token)
  %answer, %answer.decode.done = "exec.compute"(%answer.kv, %answer.prefill.done) {ctx = 1200 : i64, device = "g.h200.0", devices = ["g.h200.0"], kind_of = "model.decode", llm = "answer", model = "llama-3.1-8b", of = "answer.decode", seconds = 0.6351099266687169 : f64, sym_name = "answer.decode", tokens = 100 : i64, variant = "whole"} : (!gimlet.kv<157286400>, !async.token) -> (!gimlet.tokens<100>, !async.token)
  %out.done = "exec.compute"(%answer, %q.done) {device = "g.host", devices = ["g.host#0"], kind_of = "agent.output", of = "out", seconds = 0.0 : f64, sym_name = "out"} : (!gimlet.tokens<100>, !async.token) -> !async.token
}

// CHECK: gimletc: error: the input graph does not verify: exec-level IR: op @answer.prefill (exec.compute) on g.h200.0 uses %q, which lives on g.host, without a transfer (run insert-transfers after place)

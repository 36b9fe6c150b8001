// kv-reuse: a prefill whose prompt starts like an earlier prompt of the same model (the same system prompt,
// then the same values in the same order) reuses that prefix's KV cache where it is kept (on the devices the
// earlier prefill ran on) and is priced as a prefill of its new tokens after the cached ones. A call placed
// elsewhere is moved there, or, when it cannot move (pinned), the earlier KV cache moves to it (an operand
// that insert-transfers turns into an exec transfer). In a loop, later iterations also reuse the previous
// iteration's unchanging prefix. Every eligible prefill records its prompt's segments. Runs on placed IR. The runs name the reference stack (opt's default is vllm, whose 16-token blocks the VLLM run checks); --pin
// applies to kv-reuse too (it moves no pinned call).
// RUN: gimletc opt %s --pipeline "kv-reuse{stack=reference}" --cluster %S/../clusters/two_h200.yaml | filecheck %s
// RUN: gimletc opt %s --pipeline "kv-reuse{stack=reference},insert-transfers" --cluster %S/../clusters/two_h200.yaml --pin b=g.h200.1 \
// RUN:   | filecheck %s --check-prefix=XFER
// RUN: gimletc opt %s --pipeline "kv-reuse{route=false,stack=reference}" --cluster %S/../clusters/two_h200.yaml | filecheck %s --check-prefix=LOCAL
// RUN: gimletc opt %s --pipeline "kv-reuse{stack=vllm}" --cluster %S/../clusters/two_h200.yaml | filecheck %s --check-prefix=VLLM
// RUN: gimletc opt %s --pipeline "kv-reuse{enable=false,stack=reference}" --cluster %S/../clusters/two_h200.yaml | filecheck %s --check-prefix=OFF
// RUN: not gimletc opt %s --pipeline kv-reuse 2>&1 | filecheck %s --check-prefix=NOCLUSTER

module attributes {gimlet.level = "placed", gimlet.name = "pair", gimlet.objective = "latency"} {
  %request = "agent.input"() {device = "g.host", devices = ["g.host#0"], seconds = 0.0 : f64, sym_name = "request", tokens = 2990 : i64} : () -> !gimlet.tokens<2990>
  %a.kv = "model.prefill"(%request) {ctx = 0 : i64, device = "g.h200.0", devices = ["g.h200.0"], model = "llama-3.1-8b", of = "a", seconds = 0.12205882886965463 : f64, sym_name = "a.prefill", system = "agent", tokens = 3990 : i64} : (!gimlet.tokens<2990>) -> !gimlet.kv<522977280>
  %a = "model.decode"(%a.kv) {ctx = 3990 : i64, device = "g.h200.0", devices = ["g.h200.0"], model = "llama-3.1-8b", of = "a", seconds = 1.3026734955934287 : f64, sym_name = "a.decode", tokens = 200 : i64} : (!gimlet.kv<522977280>) -> !gimlet.tokens<200>
  %b.kv = "model.prefill"(%request, %a) {ctx = 0 : i64, device = "g.h200.1", devices = ["g.h200.1"], model = "llama-3.1-8b", of = "b", seconds = 0.1283197403706434 : f64, sym_name = "b.prefill", system = "agent", tokens = 4190 : i64} : (!gimlet.tokens<2990>, !gimlet.tokens<200>) -> !gimlet.kv<549191680>
  %b = "model.decode"(%b.kv) {ctx = 4190 : i64, device = "g.h200.1", devices = ["g.h200.1"], model = "llama-3.1-8b", of = "b", seconds = 0.6518084198372487 : f64, sym_name = "b.decode", tokens = 100 : i64} : (!gimlet.kv<549191680>) -> !gimlet.tokens<100>
  %fix.results.0 = "agent.loop"(%b) ({
  ^bb0(%fix.args.0: !gimlet.tokens<100>):
    %e.kv = "model.prefill"(%request, %fix.args.0) {ctx = 0 : i64, device = "g.h200.0", devices = ["g.h200.0"], model = "llama-3.1-8b", of = "e", seconds = 0.12518576237779327 : f64, sym_name = "e.prefill", system = "agent", tokens = 4090 : i64} : (!gimlet.tokens<2990>, !gimlet.tokens<100>) -> !gimlet.kv<536084480>
    %e = "model.decode"(%e.kv) {ctx = 4090 : i64, device = "g.h200.0", devices = ["g.h200.0"], model = "llama-3.1-8b", of = "e", seconds = 0.6514939718102257 : f64, sym_name = "e.decode", tokens = 100 : i64} : (!gimlet.kv<536084480>) -> !gimlet.tokens<100>
    %t = "agent.tool"(%e) {cpu_s = 1.0 : f64, device = "g.host", devices = ["g.host#0"], output_tokens = 50 : i64, seconds = 1.0 : f64, sym_name = "t", tool = "t"} : (!gimlet.tokens<100>) -> !gimlet.tokens<50>
    "agent.yield"(%t) {sym_name = "fix.yield"} : (!gimlet.tokens<50>) -> ()
  }) {expected = 4.0 : f64, max = 8 : i64, sym_name = "fix"} : (!gimlet.tokens<100>) -> !gimlet.tokens<50>
  "agent.output"(%fix.results.0) {device = "g.host", devices = ["g.host#1"], seconds = 0.0 : f64, sym_name = "answer"} : (!gimlet.tokens<50>) -> ()
}

// a's prompt is the 1000-token system prompt "agent" then the 2990-token request; b's and e's start the same.
// CHECK:      module attributes {gimlet.level = "placed"
// CHECK:        %a.kv = "model.prefill"(%request) {ctx = 0 : i64, device = "g.h200.0", {{.*}}prompt = ["sys:agent", "request"], prompt_tokens = [1000 : i64, 2990 : i64], seconds = 0.122058{{[0-9]*}} : f64
// b ran on the other H200: moved next to a's cache, it prefills 200 new tokens after 3990 cached ones
// (the reference stack takes any number of tokens from the cache, at most all but the prompt's last).
// CHECK:        %b.kv = "model.prefill"(%request, %a) {cached_first = 3990 : i64, cached_from = ["a.prefill"], cached_later = 3990 : i64, ctx = 0 : i64, device = "g.h200.0", devices = ["g.h200.0"], kv_reuse = "moved", {{.*}}prompt = ["sys:agent", "request", "a"], prompt_tokens = [1000 : i64, 2990 : i64, 200 : i64], seconds = 0.0154{{[0-9]*}} : f64, {{.*}}tokens = 4190 : i64}
// Its decode is in its placement unit: it moves with it.
// CHECK-NEXT:   %b = "model.decode"(%b.kv) {ctx = 4190 : i64, device = "g.h200.0", devices = ["g.h200.0"]
// e, in the loop, already runs where a's cache is.
// CHECK:          %e.kv = "model.prefill"(%request, %fix.args.0) {cached_first = 3990 : i64, cached_from = ["a.prefill"], cached_later = 3990 : i64, {{.*}}kv_reuse = "local", {{.*}}prompt = ["sys:agent", "request", "fix.args.0"]

// Pinned to the other H200, b cannot move: a's 3990-token KV cache (131072 bytes per token, 522977280 bytes)
// moves to it over NVLink: 1 us + 522977280 / 450e9 s = 0.0011631717 s, and b reads it.
// XFER:        %a.kv.to.g.h200.1.sent = "exec.send"(%a.kv) {bytes = 522977280.0 : f64, channel = "g.h200.0->g.h200.1", dst = "g.h200.1", latency = 1.0e-06 : f64, route = "direct", seconds = 0.00116317{{[0-9]*}} : f64
// XFER:        %b.kv = "model.prefill"(%request.to.g.h200.1, %a.to.g.h200.1, %a.kv.to.g.h200.1) {cached_first = 3990 : i64, {{.*}}device = "g.h200.1", {{.*}}kv_reuse = "transfer"

// Without routing, b stays where it was placed and prefills its whole prompt; e still reuses a's prefix.
// LOCAL:       %b.kv = "model.prefill"(%request, %a) {ctx = 0 : i64, device = "g.h200.1", {{.*}}seconds = 0.12831{{[0-9]*}} : f64
// LOCAL-NOT:   kv_reuse = "moved"
// LOCAL:       kv_reuse = "local"

// vLLM takes whole 16-token blocks from its cache: 3990 cached tokens are 249 blocks, 3984 tokens.
// VLLM:        %b.kv = "model.prefill"(%request, %a) {cached_first = 3984 : i64

// OFF-NOT:     prompt =
// OFF-NOT:     kv_reuse

// NOCLUSTER: pass 'kv-reuse' needs a cluster

module attributes {gimlet.level = "model"} {
  %req = "agent.input"() {sym_name = "req", tokens = 2048 : i64} : () -> !gimlet.tokens<2048>
  %chat.kv = "model.prefill"(%req) {batch = 1 : i64, ctx = 0 : i64, device = "h100-0", model = "llama-3.1-8b", of = "chat", partition = "phase", sym_name = "chat.prefill", tokens = 2048 : i64} : (!gimlet.tokens<2048>) -> !gimlet.kv<268435456>
  %chat = "model.decode"(%chat.kv) {ctx = 2048 : i64, device = "corsair-0", model = "llama-3.1-8b", of = "chat", partition = "phase", seconds = 0.75 : f64, sym_name = "chat.decode", tokens = 256 : i64} : (!gimlet.kv<268435456>) -> !gimlet.tokens<256>
  "agent.output"(%chat) {sym_name = "out"} : (!gimlet.tokens<256>) -> ()
}

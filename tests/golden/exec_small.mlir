module attributes {gimlet.level = "exec"} {
  %req, %tin = "exec.compute"() {device = "h100-0", kind_of = "agent.input", of = "req", seconds = 0.0 : f64, sym_name = "req", tokens = 512 : i64} : () -> (!gimlet.tokens<512>, !async.token)
  %kv, %t0 = "exec.compute"(%req, %tin) {device = "h100-0", kind_of = "model.prefill", layers = [0 : i64, 32 : i64], of = "chat.prefill", seconds = 0.012 : f64, sym_name = "prefill"} : (!gimlet.tokens<512>, !async.token) -> (!gimlet.kv<67108864>, !async.token)
  %t1 = "exec.send"(%kv, %t0) {bytes = 67108864 : i64, channel = "chat.kv", chunks = 4 : i64, dst = "mi300x-0", route = "host", seconds = 0.0021 : f64, src = "h100-0", sym_name = "send.kv"} : (!gimlet.kv<67108864>, !async.token) -> !async.token
  %kv.remote, %t2 = "exec.recv"(%t1) {bytes = 67108864 : i64, channel = "chat.kv", dst = "mi300x-0", src = "h100-0", sym_name = "recv.kv"} : (!async.token) -> (!gimlet.kv<67108864>, !async.token)
  %kv.amd, %t3 = "exec.convert"(%kv.remote, %t2) {device = "mi300x-0", from_dtype = "bf16", from_layout = "paged-16", seconds = 0.0004 : f64, sym_name = "convert.kv", to_dtype = "fp8", to_layout = "paged-64"} : (!gimlet.kv<67108864>, !async.token) -> (!gimlet.kv<67108864>, !async.token)
  %t4 = "exec.await"(%t0, %t3) {sym_name = "join"} : (!async.token, !async.token) -> !async.token
  %chat, %t5 = "exec.compute"(%kv.amd, %t4) {device = "mi300x-0", of = "chat.decode", seconds = 1.5 : f64, sym_name = "decode"} : (!gimlet.kv<67108864>, !async.token) -> (!gimlet.tokens<128>, !async.token)
  %done = "exec.compute"(%chat, %t5) {device = "mi300x-0", kind_of = "agent.output", of = "out", seconds = 0.0 : f64, sym_name = "out"} : (!gimlet.tokens<128>, !async.token) -> !async.token
}

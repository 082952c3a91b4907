"""A minimal OpenAI-compatible model over HTTPS for scripts/hot-symbols.sh: every chat completion answers
"pong over TLS" (streamed when asked), every embedding is a constant 1,536-dimension vector.
Usage: model.py PORT CERT_PEM KEY_PEM"""
import http.server, ssl, json, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        n = int(self.headers.get("content-length", 0)); body = json.loads(self.rfile.read(n) or b"{}")
        if self.path.endswith("/embeddings"):
            out = json.dumps({"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]*1536}],"model":"m","usage":{"prompt_tokens":1,"total_tokens":1}}).encode()
            self.send_response(200); self.send_header("content-type","application/json"); self.send_header("content-length",str(len(out))); self.end_headers(); self.wfile.write(out); return
        chunks = [{"id":"c1","object":"chat.completion.chunk","created":1,"model":body.get("model"),"choices":[{"index":0,"delta":{"role":"assistant","content":"pong over TLS"},"finish_reason":None}]},
                  {"id":"c1","object":"chat.completion.chunk","created":1,"model":body.get("model"),"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}]
        if body.get("stream"):
            data = "".join("data: " + json.dumps(c) + "\n\n" for c in chunks) + "data: [DONE]\n\n"
            out = data.encode(); ctype = "text/event-stream"
        else:
            out = json.dumps({"id":"c1","object":"chat.completion","created":1,"model":body.get("model"),"choices":[{"index":0,"message":{"role":"assistant","content":"pong over TLS"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}).encode(); ctype="application/json"
        self.send_response(200); self.send_header("content-type", ctype); self.send_header("content-length", str(len(out))); self.end_headers(); self.wfile.write(out)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()

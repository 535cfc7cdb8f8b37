"""Single-query latency of onnxruntime sessions alone and interleaved: intra-op spinning on, off, and on
with ``session.force_spinning_stop`` (threads spin between the ops of a run and stop when the run returns:
e5onnx's setting).

    python benchmarks/spinning_latency.py MODEL_DIR/model.onnx

One 16-token query; 2 intra-op threads per session; p50 ms of 300 calls per session. Shows how the spinning
threads of one session slow the next one on a 2-core machine (see benchmarks/README.md).
"""
import sys, time, numpy as np, onnxruntime as ort
path = sys.argv[1]
ids = np.array([[101] + list(range(2000, 2014)) + [102]], np.int64); m = np.ones_like(ids)
feed = {"input_ids": ids, "attention_mask": m, "token_type_ids": np.zeros_like(ids)}
def sess(spin):
    o = ort.SessionOptions(); o.intra_op_num_threads = 2; o.inter_op_num_threads = 1; o.log_severity_level = 3
    o.add_session_config_entry("session.intra_op.allow_spinning", spin[0])
    o.add_session_config_entry("session.force_spinning_stop", "1" if spin == "1+stop" else "0")
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"]); s.run(None, feed); return s
def p50(sessions, n=300):
    t = {i: [] for i in range(len(sessions))}
    for _ in range(n):
        for i, s in enumerate(sessions):
            a = time.perf_counter(); s.run(None, feed); t[i].append(time.perf_counter() - a)
    return [round(1000 * float(np.median(v)), 2) for v in t.values()]
for spin in ("1", "0", "1+stop"):
    a, b = sess(spin), sess(spin)
    print("spin", spin, "alone", p50([b]), "interleaved", p50([a, b]), "x3", p50([a, b, sess(spin)]))

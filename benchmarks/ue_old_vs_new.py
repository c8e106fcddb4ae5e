"""OUE/SUE at k = 65 536, ε = 4: this checkout vs HEAD~ code (issue 17). Run old and new interleaved:

    git worktree add /tmp/privfreq-head <old commit>; mkdir -p /tmp/oldpkg
    ln -sfn /tmp/privfreq-head /tmp/oldpkg/privfreq
    for r in 1 2; do PYTHONPATH=/tmp/oldpkg python benchmarks/ue_old_vs_new.py old; python benchmarks/ue_old_vs_new.py new; done
"""
import sys, time, numpy as np
import privfreq.protocols.unary_encoding as ue
from privfreq.protocols import get_protocol_class
kw = {} if sys.argv[1] == "old" else {"encoding": "auto"}
for pid in ("oue", "sue"):
    pr = get_protocol_class(pid)(k=65536, epsilon=4.0, **kw)
    rng = np.random.default_rng(0); x = rng.integers(0, 65536, 2048)
    bc, bs = 1e9, 1e9
    for _ in range(3):
        t0 = time.perf_counter(); b = pr.randomize(x, rng); t1 = time.perf_counter()
        pr.add_reports(pr.create_accumulator(), b); t2 = time.perf_counter()
        bc, bs = min(bc, t1 - t0), min(bs, t2 - t1)
    print(sys.argv[1], pid, getattr(pr, "encoding", "bitmap"), "client_us %.1f server_us %.1f" % (bc / 2048 * 1e6, bs / 2048 * 1e6), ue.__file__, flush=True)

"""Probe (issue 22): the three FAISS IVF scanners for a 16-byte code on the 100k adapted 64-dim prefix, coarse seconds and
recall@10 after the full-dim rerank, per nprobe x candidates. nlist 1265 (as the calibrated 100k build), 1,000 queries, 2 threads.
Inputs from ivf_compact.py (--work /tmp/o22ivf-data). Prints one line a setting: (recall, q/s of both stages, coarse seconds), load;
writes /tmp/o22-ivf-scratch/pq8.json. Run: python benchmarks/ivf_scanners_probe.py
"""

import json
import os
import time

import faiss
import numpy as np

from matryoshka_index import MatryoshkaAdaptor
from matryoshka_index.evaluation import recall_at_k

faiss.omp_set_num_threads(2)
x = np.load("/tmp/o22ivf-data/synthetic-1001000x384.npy", mmap_mode="r")
n = 100_000
full = np.ascontiguousarray(x[:n])
q = np.ascontiguousarray(x[-1000:])
truth = np.load("/tmp/o22ivf-data/truth-100000.npy")
a = MatryoshkaAdaptor.load("/tmp/o22ivf-data/adaptor")


def unit(v):
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype("float32")


c = unit(a.transform(full, dim=64))
cq = unit(a.transform(q, dim=64))
out = {}
for name, mk in [
    ("ivfpq16x8", lambda qz: faiss.IndexIVFPQ(qz, 64, 1265, 16, 8, faiss.METRIC_INNER_PRODUCT)),
    ("ivfpq32x4", lambda qz: faiss.IndexIVFPQ(qz, 64, 1265, 32, 4, faiss.METRIC_INNER_PRODUCT)),
    ("ivfpq32x4fs", lambda qz: faiss.IndexIVFPQFastScan(qz, 64, 1265, 32, 4, faiss.METRIC_INNER_PRODUCT)),
]:
    qz = faiss.IndexFlatIP(64)
    idx = mk(qz)
    idx.cp.max_points_per_centroid = 64
    idx.train(c)
    idx.add(c)
    for nprobe in (32, 64, 128, 256):
        idx.nprobe = nprobe
        for cand in (200, 500, 1000):
            t0 = time.perf_counter()
            _, rows = idx.search(cq, cand)
            t1 = time.perf_counter()
            d = np.empty((1000, 10), "float32")
            o = np.empty((1000, 10), "int64")
            rows = np.ascontiguousarray(np.where(rows < 0, np.iinfo(np.int64).max, rows))
            faiss.knn_inner_products_by_idx(
                faiss.swig_ptr(q),
                faiss.swig_ptr(full),
                faiss.swig_ptr(rows),
                384,
                1000,
                n,
                cand,
                10,
                faiss.swig_ptr(d),
                faiss.swig_ptr(o),
                cand,
            )
            t2 = time.perf_counter()
            r = recall_at_k(o, truth)
            out[f"{name} np{nprobe} c{cand}"] = (round(float(r), 4), round(1000 / (t2 - t0)), round(t1 - t0, 3))
            print(name, nprobe, cand, out[f"{name} np{nprobe} c{cand}"], os.getloadavg()[0], flush=True)
json.dump(out, open("/tmp/o22-ivf-scratch/pq8.json", "w"))

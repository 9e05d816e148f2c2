"""numpy vs torch vs ONNX adaptor on the labelled dev set: the largest difference of their outputs.

Trains an adaptor (library defaults, CPU) on ``dev-docstring-qa/corpus.npy`` (12,000 real MiniLM
embeddings, 384-d) and applies it to every corpus row and every query (2,000) three ways:

* numpy: ``adaptor.transform`` (what the library now runs on the CPU, no torch),
* torch: ``adaptor.to_torch()`` (the ``nn.Module`` training uses), float32 on the CPU,
* ONNX: ``mindex export``'s graph run by onnxruntime (CPU execution provider),

at full dimension and at the 64-dim prefix L2-normalised (the coarse query of a cosine index).
Writes ``benchmarks/results/adaptor_agreement.md`` and ``.json`` with the machine and its load.

    python benchmarks/adaptor_agreement.py [--data ../shared/data] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from matryoshka_index import MatryoshkaAdaptor, __version__
from matryoshka_index.adaptor.onnx_export import export_onnx
from matryoshka_index.validation import l2_normalize

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "adaptor_agreement")
    a = ap.parse_args()
    import onnxruntime as ort

    dev = a.data / "dev-docstring-qa"
    corpus, queries = np.load(dev / "corpus.npy"), np.load(dev / "queries.npy")
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    adaptor = MatryoshkaAdaptor(epochs=a.epochs, device="cpu", quiet=True).fit(corpus)
    module = adaptor.to_torch()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dim, normalize in ((None, False), (64, True)):
            path = export_onnx(adaptor, Path(tmp) / "a.onnx", dim=dim, normalize=normalize)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            for name, x in (("corpus", corpus), ("queries", queries)):
                ours = adaptor.transform(x, dim)
                with torch.no_grad():
                    ref = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()[:, : dim or None]
                if normalize:
                    ours, ref = l2_normalize(ours), l2_normalize(ref)
                onnx_out = session.run(["adapted"], {"embeddings": np.asarray(x, np.float32)})[0]
                rows.append(
                    {
                        "rows": name,
                        "n": len(x),
                        "output": "full 384-d" if dim is None else f"{dim}-d prefix, L2-normalised",
                        "max_abs_output": float(np.abs(ref).max()),
                        "numpy_vs_torch": float(np.abs(ours - ref).max()),
                        "onnx_vs_torch": float(np.abs(onnx_out - ref).max()),
                        "onnx_vs_numpy": float(np.abs(onnx_out - ours).max()),
                    }
                )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown",
    )
    result = {
        "machine": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "matryoshka_index": __version__,
        },
        "load_before": load_before,
        "load_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "adaptor": {"epochs": a.epochs, "trained_rows": adaptor.metadata_["training"]["rows"]},
        "rows": rows,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [
        "# numpy, torch and ONNX adaptors agree",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, onnxruntime {m['onnxruntime']}, numpy "
        f"{m['numpy']}. Load before: `{load_before}`; after: `{result['load_after']}`.",
        "",
        f"Adaptor: library defaults, {a.epochs} epochs on the dev set's corpus ({result['adaptor']['trained_rows']:,} "
        "training rows), float32 on the CPU. Largest absolute difference over every row and column:",
        "",
        "| rows | output | largest abs output | numpy vs torch | ONNX vs torch | ONNX vs numpy |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['rows']} ({r['n']:,}) | {r['output']} | {r['max_abs_output']:.3f} | {r['numpy_vs_torch']:.1e} | "
            f"{r['onnx_vs_torch']:.1e} | {r['onnx_vs_numpy']:.1e} |"
        )
    lines.append("")
    a.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

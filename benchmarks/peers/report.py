"""peers.json / peers.md / peers.png from the rows ``run.py`` measured (project venv: matplotlib)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

NOT_MEASURED = [
    "Intel's SVS (`scalable-vs` 0.5.0: LeanVec, a query-aware linear reduction, LVQ codes, full-dimension LVQ "
    "re-rank): its LVQ and LeanVec run on this machine's Intel Xeon (a 5,000-row smoke test built and searched "
    "both); the adapter with its documented grid is `benchmarks/peers/svs_peer.py`, not run on these sets (time)."
]


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def points(entry: dict[str, Any], target: float) -> tuple[list[dict], list[dict]]:
    """(peer points reaching ``target`` at their oracle setting, ours built for ``target``)."""
    peers, ours = [], []
    for r in entry["rows"]:
        if "error" in r:
            continue
        s = r["serve"]
        base = {
            "library": r["library"],
            "peer": r["peer"],
            "setting": r["setting"],
            "bytes_all": s["resident_bytes_per_vector_all"],
            "bytes": s["resident_bytes_per_vector"],
            "fixed_kb": round(s["fixed_bytes"] / 1e3, 1),
            "warmup_kb": round(s["warmup_bytes"] / 1e3, 1) if "warmup_bytes" in s else None,
            "library_bytes": s["library_bytes_per_vector"],
            "page_cache": s["page_cache_bytes_per_vector"],
            "build_s": r["build"]["build_s"],
            "load": s["load"],
        }
        if r["peer"] == "ours":
            if abs(r["build"]["build"]["target_recall"] - target) > 1e-9 or not s.get("default"):
                continue
            d = s["default"]
            info = r["build"]["info"]
            ours.append({**base, "recall": d["recall"], "qps": d["qps"], "wall_qps": d.get("wall_qps"),
                         "ok": d["recall"] >= target,
                         "params": {"candidates": info.get("candidates"), "knob": info.get("knob"),
                                    "chose": info.get("ram_budget_chose")}})  # fmt: skip
        else:
            o = s["oracle"].get(str(target))
            if o:
                peers.append(
                    {
                        **base,
                        "recall": o["recall"],
                        "qps": o["qps"],
                        "wall_qps": o.get("wall_qps"),
                        "ok": True,
                        "params": o["params"],
                    }
                )
    return peers, ours


def best_per_library(peers: list[dict]) -> list[dict]:
    best: dict[str, dict] = {}
    for p in peers:
        if p["library"] not in best or p["qps"] > best[p["library"]]["qps"]:
            best[p["library"]] = p
    return sorted(best.values(), key=lambda p: p["bytes_all"])


def frontier(ours: list[dict], key: str = "bytes_all") -> list[dict]:
    out: list[dict] = []
    for o in sorted((o for o in ours if o["ok"]), key=lambda o: (o[key], -o["qps"])):
        if not out or o["qps"] > out[-1]["qps"]:
            out.append(o)
    return out


def verdict(p: dict, ours: list[dict], key: str) -> str:
    dom = [o for o in ours if o["ok"] and o[key] <= p[key] and o["qps"] >= p["qps"]]
    if dom:
        o = max(dom, key=lambda o: o["qps"])
        return f"dominated by {o['setting']} ({o[key]:g} B, {o['qps']:,.0f} q/s)"
    faster = [o for o in ours if o["ok"] and o["qps"] >= p["qps"]]
    smaller = [o for o in ours if o["ok"] and o[key] <= p[key]]
    parts = ["**not dominated (we lose this row)**"]
    if smaller:
        s = max(smaller, key=lambda o: o["qps"])
        parts.append(f"our fastest at <= its bytes: {s['setting']} {s[key]:g} B, {s['qps']:,.0f} q/s "
                     f"= {s['qps'] / p['qps']:.2f}x its speed")  # fmt: skip
    if faster:
        f = min(faster, key=lambda o: o[key])
        parts.append(f"our smallest at >= its speed: {f['setting']} {f[key]:g} B = {f[key] / p[key]:.2f}x its bytes")
    if not smaller and not faster:
        parts.append("every one of ours is both larger and slower")
    return "; ".join(parts)


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def params_str(p: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in p["params"].items() if v is not None).replace("|", "/")


def markdown(report: dict[str, Any]) -> str:
    out = [
        "# Ours against every peer: ScaNN, LoRANN, DiskANN, usearch, hnswlib, tuned FAISS",
        "",
        "Written by `benchmarks/peers/run.py` (rows) and `benchmarks/peers/report.py` (this file). Each method x "
        "build setting ran in its own fresh processes (build, then serve) under its own venv, pinned with "
        "`taskset` to the same CPU, one thread (`OMP_NUM_THREADS=1`, FAISS's OpenMP threads 1 and "
        "`distance_compute_blas_threshold` 1280 set in every process that loads FAISS: the harness pins the value "
        "our FAISS backend would otherwise set at its first use, so FAISS baselines and ours run with the same "
        "setting whatever the order), the same data file, queries and exact ground truth, in interleaved order "
        "across libraries. The machine has 2 cores shared with other developers: one pinned thread each is the "
        "fair default there, and the load average (1-minute, start and end of each serve process) is in every row. "
        "**Speed is queries per CPU-second** (1,000 queries over the CPU time the batch cost the process, best of "
        "3): at the load averages of these runs (given per dataset, on 2 cores) the wall clock measures the scheduler as much as "
        "the method, the CPU time a batch costs does not; wall-clock queries/s are beside it (DiskANN's reads from "
        "disk are waits, counted only there).",
        "",
        "**Peers get an oracle**: every declared (build, search) setting is measured on the test queries and each "
        "library's fastest point reaching the target is shown (generous to them). **Ours get none**: the "
        "configurations declared in `benchmarks/peers/ours_peer.py` before the run, built with "
        "`target_recall` = the panel's target and searched at the candidates calibrated at build time on corpus "
        "rows; `ram_budget=` as a user calls it.",
        "",
        "**Memory, counted the same for everyone** from the serve process: *RSS B/vector (all)* = RssAnon after "
        "loading the index and a warm-up minus RssAnon before loading, over the corpus size (everything the index "
        "holds on the heap, fixed costs included); *fixed KB* = the part that does not grow with the corpus (our "
        "adaptor weights, codebooks and ITQ rotation; FAISS's trained empty index: PCA/OPQ/ITQ matrices, "
        "codebooks, centroids; DiskANN's PQ pivots; ScaNN's and LoRANN's centroids and codebooks, computed from "
        "their settings); *per-vector B* = (all - fixed) / n; *page cache B/vector* = RssFile growth over the "
        "load and the whole sweep (memory-mapped files the search read: evictable, apart); *library's B/vector* "
        "= the library's own figure where it reports one; *of which warm-up KB* = the growth over the 100-query warm-up "
        "after the load (query-time workspaces: numpy's OpenBLAS buffer at the first matrix product, search "
        "buffers a library keeps; included in *all*, not in *fixed*). The dominance verdicts use *RSS B/vector (all)*, the "
        "strictest: our adaptor's weights count against us.",
        "",
    ]
    for entry in report["datasets"].values():
        m = entry["machine"]
        loads = [x for r in entry["rows"] if "serve" in r for x in r["serve"]["load"]]
        vers = {}
        for r in entry["rows"]:
            if "serve" in r:
                vers.setdefault(r["library"], r["serve"]["versions"])
        out += [
            f"## {entry['name']}",
            "",
            f"Data: {entry['source']}. Commit(s) {entry['commit']}; started {entry['started']}, took "
            f"{entry['minutes']:.0f} min. Command(s): `{entry['command']}`. Machine: {m['cpu']}, {m['cores']} cores, "
            f"{m['ram_gib']} GiB. Threads: {entry['threads']}; pinning: {entry['pinning']}. Load average during the "
            f"serve processes: {min(loads, default=0):.2f} to {max(loads, default=0):.2f}. Our adaptor: trained "
            f"once in {entry['adaptor_fit_s'] or 0:.0f} s (library defaults), shared by every row of ours.",
            "",
            "Versions: "
            + "; ".join(f"{lib}: " + ", ".join(f"{k} {v}" for k, v in v.items()) for lib, v in vers.items()),
            "",
        ]
        if entry.get("skipped"):
            out += ["Skipped: " + "; ".join(f"{k}: {v}" for k, v in entry["skipped"].items()), ""]
        if entry.get("planned_jobs"):
            done = {f"{r['peer']}: {r['setting']}" for r in entry["rows"]}
            missing = [j for j in entry["planned_jobs"] if j not in done]
            out += [f"Jobs planned by the first runner's command {len(entry['planned_jobs'])}, rows measured "
                    f"{len(entry['rows'])} (every runner)"
                    + (f"; not run (time): {', '.join(missing)}" if missing else "") + ".", ""]  # fmt: skip
        errors = [r for r in entry["rows"] if "error" in r]
        if errors:
            out += ["Failed jobs: " + "; ".join(f"{r['setting']}: {r['error']}" for r in errors), ""]
        for target in entry["targets"]:
            peers, ours = points(entry, target)
            out += [
                f"### recall@10 >= {target}",
                "",
                "| method | setting (oracle for peers; calibrated for ours) | recall@10 | queries / CPU-s | wall q/s "
                "| RSS B/vector (all) | per-vector B | fixed KB | of which warm-up KB | library's B/vector "
                "| page cache B/vector | build s | load |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for p in best_per_library(peers) + sorted(ours, key=lambda o: o["bytes_all"]):
                mark = "" if p["ok"] else " (below target)"
                out.append(
                    f"| {p['setting']}{mark} | {params_str(p)} | {p['recall']:.4f} | {fmt(p['qps'])} | "
                    f"{fmt(p.get('wall_qps'))} | {fmt(p['bytes_all'])} | {fmt(p['bytes'])} | {fmt(p['fixed_kb'])} | {fmt(p.get('warmup_kb'))} | {fmt(p['library_bytes'])} | "
                    f"{fmt(p['page_cache'])} | {fmt(p['build_s'])} | {p['load'][0]:.1f}-{p['load'][1]:.1f} |"
                )
            out += ["", "Every peer operating point (each build setting at its oracle search setting) against ours, "
                    "by RSS B/vector (all) and by per-vector B (fixed apart); speed in queries per CPU-second:", ""]  # fmt: skip
            for p in sorted(peers, key=lambda p: (p["library"], p["bytes_all"])):
                out.append(f"- {p['setting']} ({p['bytes_all']:g} B all, {p['bytes']:g} B per vector, {p['qps']:,.0f} "
                           f"q/s): all: {verdict(p, ours, 'bytes_all')}; per vector: {verdict(p, ours, 'bytes')}.")  # fmt: skip
            f = frontier(ours)
            out += ["", "Our frontier: " + (", ".join(f"{o['setting']} ({o['bytes_all']:g} B, {o['qps']:,.0f} q/s)"
                                                       for o in f) or "none reached the target"), ""]  # fmt: skip
            others = [p for p in peers if p not in best_per_library(peers)]
            if others:
                out += ["<details><summary>every other peer build setting at this target</summary>", "",
                        "| method | oracle setting | recall@10 | queries / CPU-s | RSS B/vector (all) | build s |",
                        "|---|---|---|---|---|---|"]  # fmt: skip
                for p in sorted(others, key=lambda p: (p["library"], p["bytes_all"])):
                    out.append(f"| {p['setting']} | {params_str(p)} | {p['recall']:.4f} | {fmt(p['qps'])} | "
                               f"{fmt(p['bytes_all'])} | {fmt(p['build_s'])} |")  # fmt: skip
                out += ["", "</details>", ""]
        out += ["### What each keeps in RAM", ""]
        for lib, text in entry.get("keeps_in_ram", {}).items():
            out.append(f"- **{lib}**: {text}")
        out.append("")
    out += ["## Not measured", "", *[f"- {x}" for x in NOT_MEASURED], ""]
    out += report.get("notes", [])
    return "\n".join(out) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(e, t) for e in report["datasets"].values() for t in e["targets"]]
    cols = 2
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(8 * cols, 6 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    libs = sorted({r["library"] for e, _ in panels for r in e["rows"] if r["peer"] != "ours"})
    colours = ["C0", "C1", "C2", "C4", "C5", "C6", "C7", "C8", "C9"]  # red (C3) is ours
    style = {lib: ("osD^v<>pPX*h"[i % 12], colours[i % len(colours)]) for i, lib in enumerate(libs)}
    for ax, (entry, target) in zip(axes.flat, panels, strict=False):
        peers, ours = points(entry, target)
        seen = set()
        for p in peers:
            marker, colour = style[p["library"]]
            best = p in best_per_library(peers)
            ax.scatter(p["bytes_all"], p["qps"], marker=marker, c=colour, s=80 if best else 25,
                       alpha=1 if best else 0.35, label=None if p["library"] in seen else p["library"])  # fmt: skip
            seen.add(p["library"])
            if best:
                ax.annotate(p["setting"], (p["bytes_all"], p["qps"]), fontsize=6, xytext=(4, -8),
                            textcoords="offset points", color=colour)  # fmt: skip
        ok = [o for o in ours if o["ok"]]
        ax.scatter([o["bytes_all"] for o in ok], [o["qps"] for o in ok], c="tab:red", s=18, alpha=0.5,
                   label="ours (declared configurations)")  # fmt: skip
        f = frontier(ours)
        ax.plot([o["bytes_all"] for o in f], [o["qps"] for o in f], "-o", c="tab:red", lw=2, label="our frontier")
        for o in f:
            ax.annotate(o["setting"].replace("ours ", ""), (o["bytes_all"], o["qps"]), fontsize=6,
                        xytext=(4, 4), textcoords="offset points", color="tab:red")  # fmt: skip
        if not peers and not ok:  # nothing measured at this target yet (a runner's first rows): no log axes
            ax.text(0.5, 0.5, "no point reached this target", ha="center", transform=ax.transAxes)
        else:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("resident bytes / vector, all (RSS delta of the serve process / n; log)")
        ax.set_ylabel("queries per CPU-second, 1,000-query batch, 1 thread (log)")
        ax.set_title(f"{entry['name']}: recall@10 >= {target}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(path: Path, key: str, entry: dict[str, Any]) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from worker import make_peer

    entry["keeps_in_ram"] = {}
    for r in entry["rows"]:
        if r["library"] not in entry["keeps_in_ram"]:
            entry["keeps_in_ram"][r["library"]] = make_peer(r["peer"]).keeps_in_ram
    report = json.loads(path.read_text()) if path.exists() else {"datasets": {}}
    report["datasets"][key] = entry
    atomic_write(path, (json.dumps(report, indent=1) + "\n").encode())
    atomic_write(path.with_suffix(".md"), markdown(report).encode())
    plot(report, path.with_suffix(".png"))


def main() -> None:
    """Re-write peers.md and peers.png from peers.json; ``--merge`` first folds other runs' files into it
    (each run writes its own dataset entries); ``--notes`` sets the closing notes (a markdown file)."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "peers.json")
    ap.add_argument("--merge", type=Path, nargs="*", default=[])
    ap.add_argument("--notes", type=Path, default=None)
    args = ap.parse_args()
    report = json.loads(args.results.read_text()) if args.results.exists() else {"datasets": {}}
    for other in args.merge:
        for key, entry in json.loads(other.read_text())["datasets"].items():
            mine = report["datasets"].get(key)
            if mine is not None and (mine.get("shard"), mine["command"]) != (entry.get("shard"), entry["command"]):
                # another runner of the same run: join its rows, keep both pinnings and the longer time
                mine["rows"] += entry["rows"]
                mine["pinning"] += "; " + entry["pinning"]
                mine["minutes"] = max(mine["minutes"], entry["minutes"])
                mine["shard"] = f"{mine['shard']}+{entry['shard']}"
                mine["keeps_in_ram"] = {**mine.get("keeps_in_ram", {}), **entry.get("keeps_in_ram", {})}
                for field in ("command", "commit"):
                    if entry[field] not in mine[field]:
                        mine[field] += f" ; {entry[field]}"
                mine["skipped"] = {**mine.get("skipped", {}), **entry.get("skipped", {})}
            else:
                report["datasets"][key] = entry
    if args.notes is not None:
        report["notes"] = args.notes.read_text().rstrip("\n").split("\n")
    atomic_write(args.results, (json.dumps(report, indent=1) + "\n").encode())
    atomic_write(args.results.with_suffix(".md"), markdown(report).encode())
    plot(report, args.results.with_suffix(".png"))


if __name__ == "__main__":
    main()

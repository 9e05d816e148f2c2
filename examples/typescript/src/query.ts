// Query a matryoshka-index Qdrant collection from TypeScript (Node >= 20), no Python at query time.
//
//   node dist/query.js INDEX_DIR QUERY.json [--k 10] [--candidates N] [--collection NAME] [--onnx coarse.onnx]
//
// INDEX_DIR is what `mindex build ... -o INDEX_DIR` (or `index.save`) wrote: manifest.json and adaptor/.
// QUERY.json is one raw query embedding, a JSON array of d floats (the same model's embedding you
// would give `mindex search`). The adaptor is applied here, from adaptor/adaptor.safetensors, with the
// formula documented in the project README ("Query from another language"); with --onnx it is run
// by onnxruntime-node from a file written by `mindex export INDEX_DIR -o coarse.onnx` instead.
// Then the two-stage request is built: a prefetch on the `coarse` vector (the adapted prefix,
// `limit` = candidates) and the final query on the full vector (`using`). With QDRANT_URL set (and
// QDRANT_API_KEY if the server wants one) it is POSTed; otherwise the request is printed.

import { readFileSync } from "node:fs";
import { join } from "node:path";

type Tensors = Record<string, { shape: number[]; data: Float32Array }>;

// safetensors: 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, the bytes.
function readSafetensors(path: string): Tensors {
  const buf = readFileSync(path);
  const headerLength = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLength).toString("utf8"));
  const out: Tensors = {};
  for (const [name, info] of Object.entries<any>(header)) {
    if (name === "__metadata__") continue;
    if (info.dtype !== "F32") throw new Error(`${path}: tensor ${name} is ${info.dtype}, expected F32`);
    const [start, end] = info.data_offsets;
    const bytes = buf.subarray(8 + headerLength + start, 8 + headerLength + end);
    const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    out[name] = { shape: info.shape, data };
  }
  return out;
}

// erfc for a >= 0 (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7); JavaScript has no Math.erf.
function erfcAbs(a: number): number {
  const t = 1 / (1 + 0.5 * a);
  const c = [0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196, 1.00002368, -1.26551223];
  let p = c[0];
  for (let i = 1; i < c.length; i++) p = p * t + c[i];
  return t * Math.exp(-a * a + p);
}

function gelu(x: number): number {
  const tail = 0.5 * x * erfcAbs(Math.abs(x) / Math.SQRT2); // x * (1 + erf(x / sqrt 2)) / 2, without cancellation
  return x < 0 ? tail : x - tail;
}

// f(e) = z + W2 gelu(W1 z + b1) + b2 with z = (e - c) R (or e - c): the first `m` outputs only. c is the
// query head's query_centre when the adaptor has one (fitted with queries), else nothing.
function adapt(t: Tensors, e: number[], m: number): number[] {
  const d = e.length;
  if (t["query_centre"]) {
    const c = t["query_centre"].data;
    e = e.map((v, i) => v - c[i]);
  }
  let z = e;
  if (t["rotation"]) {
    const R = t["rotation"].data; // (d, d), row-major: z = e @ R
    z = new Array(d).fill(0);
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) z[j] += e[i] * R[i * d + j];
  }
  if (!t["mlp.0.weight"]) return z.slice(0, m); // a PCA rotation: no MLP
  const W1 = t["mlp.0.weight"].data, b1 = t["mlp.0.bias"].data; // (hidden, d), (hidden)
  const W2 = t["mlp.2.weight"].data, b2 = t["mlp.2.bias"].data; // (d, hidden), (d)
  const hidden = b1.length;
  const g = new Array(hidden);
  for (let k = 0; k < hidden; k++) {
    let s = b1[k];
    for (let j = 0; j < d; j++) s += W1[k * d + j] * z[j];
    g[k] = gelu(s);
  }
  const y = new Array(m);
  for (let j = 0; j < m; j++) {
    let s = z[j] + b2[j];
    for (let k = 0; k < hidden; k++) s += W2[j * hidden + k] * g[k];
    y[j] = s;
  }
  return y;
}

function normalize(v: number[]): number[] {
  const n = Math.max(Math.sqrt(v.reduce((s, x) => s + x * x, 0)), 1e-12); // the index's floor
  return v.map((x) => x / n);
}

async function adaptWithOnnx(path: string, q: number[]): Promise<number[]> {
  const ort = await import("onnxruntime-node");
  const session = await ort.InferenceSession.create(path);
  const result = await session.run({ embeddings: new ort.Tensor("float32", Float32Array.from(q), [1, q.length]) });
  return Array.from(result["adapted"].data as Float32Array);
}

function option(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const [indexDir, queryFile] = args;
  if (!indexDir || !queryFile) {
    console.error("usage: node dist/query.js INDEX_DIR QUERY.json [--k 10] [--candidates N] [--collection NAME] [--onnx FILE]");
    process.exit(2);
  }
  const manifest = JSON.parse(readFileSync(join(indexDir, "manifest.json"), "utf8"));
  const q: number[] = JSON.parse(readFileSync(queryFile, "utf8"));
  if (q.length !== manifest.input_dim) throw new Error(`${queryFile}: ${q.length} floats, the index takes ${manifest.input_dim}`);
  const m: number = manifest.coarse_dim;
  const cosine = manifest.metric === "cosine";
  const kind = manifest.adaptor?.kind ?? "none";

  const onnx = option(args, "--onnx");
  let coarse: number[];
  let adaptedFull: number[] | undefined;
  if (onnx) {
    coarse = await adaptWithOnnx(onnx, q); // the export already took the prefix and normalised it
  } else {
    let tensors: Tensors = {};
    if (kind === "matryoshka-adaptor") tensors = readSafetensors(join(indexDir, "adaptor", "adaptor.safetensors"));
    if (kind === "pca") throw new Error("a PCA adaptor is a .npy rotation: use --onnx with `mindex export INDEX_DIR -o coarse.onnx`");
    adaptedFull = manifest.rerank === "adapted" ? adapt(tensors, q, q.length) : undefined;
    coarse = adapt(tensors, q, m);
    if (cosine) coarse = normalize(coarse);
  }
  if (manifest.rerank === "adapted" && !adaptedFull) throw new Error("rerank=adapted needs the safetensors path (no --onnx)");
  const fullRaw = adaptedFull ?? q;
  const full = cosine ? normalize(fullRaw) : fullRaw;

  const k = Number(option(args, "--k") ?? 10);
  const candidates = Math.max(Number(option(args, "--candidates") ?? manifest.candidates ?? k), k);
  const backend = manifest.backend ?? {};
  const coarseParams: Record<string, unknown> = backend.index === "flat" ? { exact: true } : { hnsw_ef: candidates };
  if (backend.coarse_quantization) coarseParams.quantization = { rescore: true };
  const fullVector: string = backend.full_vector ?? "full"; // "" (migrated in place, unnamed vector): no `using`
  const body = {
    prefetch: { query: coarse, using: "coarse", limit: candidates, params: coarseParams },
    query: full,
    ...(fullVector ? { using: fullVector } : {}),
    limit: k,
    with_payload: true,
  };
  const collection = option(args, "--collection") ?? backend.collection;
  const path = `/collections/${collection}/points/query`;

  const url = process.env.QDRANT_URL;
  if (!url) {
    console.log(JSON.stringify({ method: "POST", path, body }, null, 2));
    return;
  }
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (process.env.QDRANT_API_KEY) headers["api-key"] = process.env.QDRANT_API_KEY;
  const response = await fetch(url.replace(/\/$/, "") + path, { method: "POST", headers, body: JSON.stringify(body) });
  const answer: any = await response.json();
  if (!response.ok) throw new Error(`Qdrant answered ${response.status}: ${JSON.stringify(answer)}`);
  for (const p of answer.result.points) console.log(JSON.stringify({ id: p.id, score: p.score, payload: p.payload }));
}

main().catch((err) => {
  console.error(String(err instanceof Error ? err.message : err));
  process.exit(1);
});

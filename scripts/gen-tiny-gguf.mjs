#!/usr/bin/env node
// Source: the team's tools/gen-tiny-gguf.mjs (kept beside the project), copied verbatim below this line.
// src/engines/tiny-model.ts runs this file to make the demo model (DATA_DIR/models/tiny-cycle.gguf).
// Generate a tiny llama-architecture GGUF (v3) model with no dependencies.
//
// usage: node gen-tiny-gguf.mjs OUT.gguf [--mode cycle|random] [--embd 64] [--layers 2]
//                                  [--heads 4] [--kv-heads 4] [--ff 192] [--ctx 512] [--seed 42] [--f16]
//
// Vocab (SPM / tokenizer.ggml.model = "llama", byte fallback), 262 tokens:
//   0 <unk>  1 <s> (BOS)  2 </s> (EOS)  3 <|im_start|>  4 <|im_end|> (EOT)  5 "▁" (space)
//   6..261 <0x00>..<0xFF> (BYTE tokens)
// A ChatML jinja template is embedded as tokenizer.chat_template.
//
// --mode random: all weights ~ N(0, 0.02..) random; output is gibberish bytes.
// --mode cycle (default): weights are random, but token_embd/output are built so that the
//   argmax next token is a fixed permutation of the previous token (a "bigram cycle"),
//   with the attention/FFN blocks contributing only small noise. Greedy AND sampled output
//   is therefore deterministic: after "\n" (the end of the ChatML generation prompt) the
//   model writes "abcdefghijklmnopqrstuvwxyz" and then <|im_end|> (EOG) -> finish_reason "stop".
import fs from 'node:fs';

const args = process.argv.slice(2);
const out = args[0];
if (!out || out.startsWith('--')) {
  console.error('usage: gen-tiny-gguf.mjs OUT.gguf [options]');
  process.exit(2);
}
const opt = (name, def) => {
  const i = args.indexOf('--' + name);
  return i >= 0 ? args[i + 1] : def;
};
const MODE = opt('mode', 'cycle');
const D = +opt('embd', 64),
  L = +opt('layers', 2),
  H = +opt('heads', 4),
  HKV = +opt('kv-heads', H);
const FF = +opt('ff', 192),
  CTX = +opt('ctx', 512),
  SEED = +opt('seed', 42);
const F16 = args.includes('--f16');
const HD = D / H;
if (!Number.isInteger(HD) || H % HKV) throw new Error('embd must divide by heads, heads by kv-heads');

// ---------- deterministic PRNG (mulberry32 + Box-Muller) ----------
let s = SEED >>> 0;
const rnd = () => {
  s = (s + 0x6d2b79f5) >>> 0;
  let t = s;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const gauss = () => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
const randn = (n, std) => {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = gauss() * std;
  return a;
};
const fill = (n, v) => new Float32Array(n).fill(v);

// ---------- vocab ----------
const T_NORMAL = 1,
  T_UNKNOWN = 2,
  T_CONTROL = 3,
  T_BYTE = 6;
const tokens = ['<unk>', '<s>', '</s>', '<|im_start|>', '<|im_end|>', '\u2581'];
const types = [T_UNKNOWN, T_CONTROL, T_CONTROL, T_CONTROL, T_CONTROL, T_NORMAL];
const BYTE0 = tokens.length;
for (let b = 0; b < 256; b++) {
  tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  types.push(T_BYTE);
}
const V = tokens.length;
const scores = new Float32Array(V); // all 0: nothing to merge anyway
const byteTok = (ch) => BYTE0 + ch.charCodeAt(0);
const EOT = 4;

const chatTemplate =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

// ---------- weights (shapes in ggml order: ne0 = row length = fastest) ----------
const tensors = []; // {name, dims:[ne0, ne1], data: Float32Array}
const add = (name, dims, data) => tensors.push({ name, dims, data });

const embd = randn(V * D, MODE === 'cycle' ? 1.0 : 0.02);
add('token_embd.weight', [D, V], embd);
add('output_norm.weight', [D], fill(D, 1));

let outW;
if (MODE === 'cycle') {
  // successor permutation: "\n" -> a..z -> <|im_end|> -> (everything else) -> printable ASCII -> "\n"
  const chain = [byteTok('\n')];
  for (let c = 97; c <= 122; c++) chain.push(BYTE0 + c);
  chain.push(EOT);
  const inChain = new Set(chain);
  const printable = [],
    other = [];
  for (let t = 0; t < V; t++) {
    if (inChain.has(t)) continue;
    const b = t - BYTE0;
    (b >= 0x20 && b < 0x7f ? printable : other).push(t);
  }
  const cycle = [...chain, ...other, ...printable];
  const next = new Int32Array(V);
  for (let i = 0; i < cycle.length; i++) next[cycle[i]] = cycle[(i + 1) % cycle.length];
  // logits[j] = out_row_j . rmsnorm(x) ; set out_row_{next(t)} = alpha * embd_row_t
  outW = new Float32Array(V * D);
  const alpha = 0.5;
  for (let t = 0; t < V; t++) {
    const j = next[t];
    for (let k = 0; k < D; k++) outW[j * D + k] = alpha * embd[t * D + k];
  }
} else {
  outW = randn(V * D, 0.02);
}
add('output.weight', [D, V], outW);

const wstd = MODE === 'cycle' ? 1 / Math.sqrt(D) : 0.02;
const resid = MODE === 'cycle' ? 0.002 : 0.02; // small projections back into the residual stream
for (let i = 0; i < L; i++) {
  add(`blk.${i}.attn_norm.weight`, [D], fill(D, 1));
  add(`blk.${i}.attn_q.weight`, [D, D], randn(D * D, wstd));
  add(`blk.${i}.attn_k.weight`, [D, HD * HKV], randn(D * HD * HKV, wstd));
  add(`blk.${i}.attn_v.weight`, [D, HD * HKV], randn(D * HD * HKV, wstd));
  add(`blk.${i}.attn_output.weight`, [D, D], randn(D * D, resid));
  add(`blk.${i}.ffn_norm.weight`, [D], fill(D, 1));
  add(`blk.${i}.ffn_gate.weight`, [D, FF], randn(D * FF, wstd));
  add(`blk.${i}.ffn_up.weight`, [D, FF], randn(D * FF, wstd));
  add(`blk.${i}.ffn_down.weight`, [FF, D], randn(FF * D, resid));
}

// ---------- metadata ----------
const U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STR = 8,
  ARR = 9;
const kv = [
  ['general.architecture', STR, 'llama'],
  ['general.name', STR, `tiny-test-llama-${MODE}`],
  ['general.file_type', U32, F16 ? 1 : 0],
  ['general.alignment', U32, 32],
  ['llama.context_length', U32, CTX],
  ['llama.embedding_length', U32, D],
  ['llama.block_count', U32, L],
  ['llama.feed_forward_length', U32, FF],
  ['llama.attention.head_count', U32, H],
  ['llama.attention.head_count_kv', U32, HKV],
  ['llama.rope.dimension_count', U32, HD],
  ['llama.rope.freq_base', F32, 10000],
  ['llama.attention.layer_norm_rms_epsilon', F32, 1e-5],
  ['llama.vocab_size', U32, V],
  ['tokenizer.ggml.model', STR, 'llama'],
  ['tokenizer.ggml.tokens', ARR, [STR, tokens]],
  ['tokenizer.ggml.scores', ARR, [F32, scores]],
  ['tokenizer.ggml.token_type', ARR, [I32, types]],
  ['tokenizer.ggml.bos_token_id', U32, 1],
  ['tokenizer.ggml.eos_token_id', U32, 2],
  ['tokenizer.ggml.eot_token_id', U32, EOT],
  ['tokenizer.ggml.unknown_token_id', U32, 0],
  ['tokenizer.ggml.padding_token_id', U32, 0],
  ['tokenizer.ggml.add_bos_token', BOOL, true],
  ['tokenizer.ggml.add_eos_token', BOOL, false],
  ['tokenizer.ggml.add_space_prefix', BOOL, false],
  ['tokenizer.chat_template', STR, chatTemplate],
];

// ---------- binary writer ----------
const chunks = [];
let size = 0;
const push = (b) => {
  chunks.push(b);
  size += b.length;
};
const u32 = (v) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  push(b);
};
const i32 = (v) => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  push(b);
};
const u64 = (v) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  push(b);
};
const f32 = (v) => {
  const b = Buffer.alloc(4);
  b.writeFloatLE(v);
  push(b);
};
const str = (v) => {
  const s = Buffer.from(v, 'utf8');
  u64(s.length);
  push(s);
};
const val = (type, v) => {
  switch (type) {
    case U32:
      return u32(v);
    case I32:
      return i32(v);
    case F32:
      return f32(v);
    case BOOL:
      return push(Buffer.from([v ? 1 : 0]));
    case STR:
      return str(v);
    case ARR: {
      const [et, items] = v;
      u32(et);
      u64(items.length);
      for (const x of items) val(et, x);
      return;
    }
    default:
      throw new Error('type ' + type);
  }
};
const pad = (n, a = 32) => (a - (n % a)) % a;

// f32 -> f16 (round to nearest even is overkill here; truncation-with-rounding is fine for random weights)
const toF16 = (f32arr) => {
  const out = Buffer.alloc(f32arr.length * 2),
    fv = new Float32Array(1),
    iv = new Uint32Array(fv.buffer);
  for (let i = 0; i < f32arr.length; i++) {
    fv[0] = f32arr[i];
    const x = iv[0];
    const sign = (x >>> 16) & 0x8000;
    let e = ((x >>> 23) & 0xff) - 127 + 15;
    let m = x & 0x7fffff;
    let h;
    if (e <= 0) {
      h = e < -10 ? sign : sign | ((m | 0x800000) >> (1 - e + 13));
    } else if (e >= 31) h = sign | 0x7c00;
    else {
      h = sign | (e << 10) | (m >> 13);
      if (m & 0x1000) h++;
    }
    out.writeUInt16LE(h & 0xffff, i * 2);
  }
  return out;
};

u32(0x46554747); // "GGUF"
u32(3); // version
u64(tensors.length);
u64(kv.length);
for (const [k, t, v] of kv) {
  str(k);
  u32(t);
  val(t, v);
}

const blobs = [];
let off = 0;
for (const t of tensors) {
  // 1-D tensors (norms) stay F32, as llama.cpp's converters do
  const asF16 = F16 && t.dims.length > 1;
  const blob = asF16 ? toF16(t.data) : Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  str(t.name);
  u32(t.dims.length);
  for (const d of t.dims) u64(d);
  u32(asF16 ? 1 : 0);
  u64(off);
  blobs.push(blob, Buffer.alloc(pad(blob.length)));
  off += blob.length + pad(blob.length);
}
push(Buffer.alloc(pad(size)));
for (const b of blobs) push(b);
fs.writeFileSync(out, Buffer.concat(chunks, size));
console.log(
  `wrote ${out}: ${size} bytes, mode=${MODE}, vocab=${V}, embd=${D}, layers=${L}, heads=${H}/${HKV}, ff=${FF}, ctx=${CTX}, ${F16 ? 'f16' : 'f32'}`,
);

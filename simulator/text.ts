/** Deterministic "model": token counting, completion text, stop strings, embeddings. No I/O. */

/** mulberry32: tiny, fast, seeded PRNG returning floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** 32-bit FNV-1a over UTF-16 code units. */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function isSpace(c: number): boolean {
  // ASCII whitespace plus the common unicode spaces String.prototype.trim knows about.
  return (
    c === 32 ||
    (c >= 9 && c <= 13) ||
    c === 160 ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0xfeff ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x3000 ||
    c === 0x1680 ||
    c === 0x202f ||
    c === 0x205f
  );
}

/** Number of whitespace-separated words, without allocating. */
export function countWords(s: string): number {
  let n = 0;
  let inWord = false;
  for (let i = 0; i < s.length; i++) {
    if (isSpace(s.charCodeAt(i))) inWord = false;
    else if (!inWord) {
      inWord = true;
      n++;
    }
  }
  return n;
}

const WS = /\s+/;
export function splitWords(s: string): string[] {
  const t = s.trim();
  return t === '' ? [] : t.split(WS);
}

/** Content of a chat message: string, null, or an array of parts. */
type Content = unknown;

/** Prompt tokens a piece of message content counts for: words of text, 1 per non-text part (image_url, audio...). */
export function contentTokens(content: Content): number {
  if (typeof content === 'string') return countWords(content);
  if (!Array.isArray(content)) return 0;
  let n = 0;
  for (const part of content) {
    if (part && typeof part === 'object') {
      const p = part as { type?: unknown; text?: unknown };
      if (p.type === 'text' || (p.type === undefined && typeof p.text === 'string')) {
        n += typeof p.text === 'string' ? countWords(p.text) : 0;
      } else n += 1;
    }
  }
  return n;
}

/** Words of a message's text (string content or text parts, in order). */
export function contentWords(content: Content): string[] {
  if (typeof content === 'string') return splitWords(content);
  if (!Array.isArray(content)) return [];
  const out: string[] = [];
  for (const part of content) {
    const p = part as { type?: unknown; text?: unknown } | null;
    if (p && typeof p === 'object' && typeof p.text === 'string' && (p.type === 'text' || p.type === undefined)) {
      for (const w of splitWords(p.text)) out.push(w);
    }
  }
  return out;
}

export interface ChatMessageLike {
  role?: unknown;
  content?: unknown;
}

/** Prompt tokens of a chat request: words of every message's content + 1 per message. */
export function chatPromptTokens(messages: readonly ChatMessageLike[]): number {
  let n = 0;
  for (const m of messages) n += 1 + (m && typeof m === 'object' ? contentTokens(m.content) : 0);
  return n;
}

/** Words of the last user message ([] when there is none). */
export function lastUserWords(messages: readonly ChatMessageLike[]): string[] {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m && typeof m === 'object' && m.role === 'user') return contentWords(m.content);
  }
  return [];
}

// Cache of "tok0 tok1 ... tokK" and the end offset of each word, grown on demand.
let tokText = '';
const tokEnds: number[] = [];
function ensureToks(n: number): void {
  if (tokEnds.length >= n) return;
  const parts: string[] = [tokText];
  let len = tokText.length;
  for (let i = tokEnds.length; i < n; i++) {
    const w = (i === 0 ? 'tok' : ' tok') + i;
    parts.push(w);
    len += w.length;
    tokEnds.push(len);
  }
  tokText = parts.join('');
}

/** "tok0 tok1 ... tok(n-1)" */
function toks(n: number): string {
  if (n <= 0) return '';
  ensureToks(n);
  return tokText.slice(0, tokEnds[n - 1]);
}

/** The first `count` words of ["You", "said:", ...echo, "tok0", "tok1", ...], joined with single spaces. */
export function buildCompletion(echo: readonly string[], count: number): string {
  if (count <= 0) return '';
  const head = ['You', 'said:'];
  for (const w of echo) head.push(w);
  if (count <= head.length) return head.slice(0, count).join(' ');
  return head.join(' ') + ' ' + toks(count - head.length);
}

export interface StopResult {
  text: string;
  /** The stop string that matched, or null. */
  stop: string | null;
}

/** Cuts `text` before the earliest occurrence of any stop string. */
export function applyStop(text: string, stop: readonly string[] | null): StopResult {
  if (!stop || stop.length === 0) return { text, stop: null };
  let best = -1;
  let which: string | null = null;
  for (const s of stop) {
    if (s === '') continue;
    const i = text.indexOf(s);
    if (i !== -1 && (best === -1 || i < best)) {
      best = i;
      which = s;
    }
  }
  return best === -1 ? { text, stop: null } : { text: text.slice(0, best), stop: which };
}

const PIECE = /\S+\s*/g;
/** Splits a completion into one piece per token (word + its trailing whitespace); pieces concatenate to the text. */
export function tokenPieces(text: string): string[] {
  return text.match(PIECE) ?? [];
}

/** Deterministic unit-length vector derived from a hash of `key` (independent of --seed). */
export function embed(key: string, dim: number): number[] {
  const rand = mulberry32(fnv1a(key) ^ Math.imul(dim, 0x9e3779b1));
  const v = new Array<number>(dim);
  let norm = 0;
  for (let i = 0; i < dim; i++) {
    const x = rand() * 2 - 1;
    v[i] = x;
    norm += x * x;
  }
  norm = Math.sqrt(norm) || 1;
  for (let i = 0; i < dim; i++) v[i] = v[i]! / norm;
  return v;
}

/** Base64 of the float32 little-endian encoding, as OpenAI/vLLM return for encoding_format "base64". */
export function embeddingBase64(v: readonly number[]): string {
  const f = new Float32Array(v);
  return Buffer.from(f.buffer, f.byteOffset, f.byteLength).toString('base64');
}

import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP, type LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';

/**
 * The SSRF guard for webhook URLs. A webhook URL comes from a client (batch metadata), so
 * the server must never post to itself, its network or a cloud metadata service on the
 * client's behalf. Deny by default: an address is allowed only if ipaddr.js classes it as
 * global `unicast` (after unwrapping IPv6 forms that carry an IPv4 address), or the operator
 * listed it in WEBHOOK_ALLOW_HOSTS.
 *
 * The URL is checked twice: at batch create (syntax, scheme, literal addresses, host names
 * such as localhost) and at every delivery, where the host is resolved here, every address
 * is checked, and the connection is pinned to the checked addresses (`pinnedLookup`), so a
 * DNS answer that changes between check and connect (rebinding) cannot reach an internal
 * address. Redirects are never followed (see send.ts).
 */

export type Verdict = { ok: true } | { ok: false; reason: string };

type Addr = ipaddr.IPv4 | ipaddr.IPv6;

export interface AllowList {
  /** Lower-case host names, without a trailing dot. */
  readonly hosts: ReadonlySet<string>;
  readonly cidrs: readonly [Addr, number][];
}

export const EMPTY_ALLOW_LIST: AllowList = { hosts: new Set(), cidrs: [] };

/** Host names that are internal whatever DNS says about them. */
const BLOCKED_NAMES = new Set([
  'localhost',
  'localhost.localdomain',
  'ip6-localhost',
  'ip6-loopback',
  'metadata',
  'metadata.google.internal',
  'metadata.goog',
  'instance-data',
  'instance-data.ec2.internal',
]);
const BLOCKED_SUFFIXES = ['.localhost', '.metadata.google.internal'];

/** Cloud metadata services: refused even inside an allowed CIDR, unless listed as one exact address. */
const METADATA_ADDRESSES = new Set([
  '169.254.169.254',
  '169.254.170.2',
  '100.100.100.200',
  'fd00:ec2::254',
  'fd00:ec2::23',
]);

/**
 * Parses WEBHOOK_ALLOW_HOSTS: comma-separated host names, addresses and CIDRs
 * (`127.0.0.1, receiver.internal, 10.1.0.0/16, ::1`). Throws on an entry it cannot read.
 */
export function parseAllowList(text: string | undefined): AllowList {
  const hosts = new Set<string>();
  const cidrs: [Addr, number][] = [];
  for (const raw of (text ?? '').split(',')) {
    const entry = raw
      .trim()
      .toLowerCase()
      .replace(/^\[(.*)\]$/, '$1');
    if (!entry) continue;
    if (entry.includes('/')) {
      try {
        cidrs.push(ipaddr.parseCIDR(entry));
      } catch {
        throw new Error(`WEBHOOK_ALLOW_HOSTS: "${raw.trim()}" is not a CIDR (e.g. 10.0.0.0/8 or fd00::/8)`);
      }
    } else if (isIP(entry)) {
      const a = ipaddr.parse(entry);
      cidrs.push([a, a.kind() === 'ipv4' ? 32 : 128]);
    } else if (/^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?$/.test(entry)) {
      hosts.add(entry.replace(/\.$/, ''));
    } else {
      throw new Error(`WEBHOOK_ALLOW_HOSTS: "${raw.trim()}" is neither a host name, an address nor a CIDR`);
    }
  }
  return { hosts, cidrs };
}

function inAllowedCidr(addr: Addr, allow: AllowList, exactOnly: boolean): boolean {
  return allow.cidrs.some(([net, bits]) => {
    if (net.kind() !== addr.kind()) return false;
    if (exactOnly && bits !== (net.kind() === 'ipv4' ? 32 : 128)) return false;
    return addr.match(net, bits);
  });
}

/** The IPv4 address an IPv6 address carries, for the forms that route to it; else null. */
function embeddedIPv4(a: ipaddr.IPv6): { v4: ipaddr.IPv4; form: string } | null {
  const p = a.parts;
  const v4of = (hi: number, lo: number) => new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
  switch (a.range()) {
    case 'ipv4Mapped':
      return { v4: v4of(p[6]!, p[7]!), form: 'IPv4-mapped' };
    case 'rfc6145':
      return { v4: v4of(p[6]!, p[7]!), form: 'IPv4-translated' };
    case 'rfc6052':
      return { v4: v4of(p[6]!, p[7]!), form: 'NAT64' };
    case '6to4':
      return { v4: v4of(p[1]!, p[2]!), form: '6to4' };
  }
  // IPv4-compatible (::a.b.c.d, deprecated by RFC 4291): top 96 bits zero, not :: or ::1.
  if (p.slice(0, 6).every((x) => x === 0) && a.range() === 'unicast')
    return { v4: v4of(p[6]!, p[7]!), form: 'IPv4-compatible' };
  return null;
}

const RANGE_WORDS: Record<string, string> = {
  unspecified: 'unspecified (0.0.0.0/8 or ::)',
  broadcast: 'broadcast',
  multicast: 'multicast',
  linkLocal: 'link-local',
  loopback: 'loopback',
  carrierGradeNat: 'carrier-grade NAT (100.64.0.0/10)',
  private: 'private (RFC 1918)',
  reserved: 'reserved',
  uniqueLocal: 'unique-local (fc00::/7)',
  deprecatedSiteLocal: 'site-local (fec0::/10)',
  teredo: 'Teredo',
};

/**
 * Whether a webhook may be posted to `ip` (a literal IPv4 or IPv6 address, no brackets,
 * no zone). The reason names the address and its range.
 */
export function checkAddress(ip: string, allow: AllowList = EMPTY_ALLOW_LIST): Verdict {
  const bare = ip.replace(/^\[(.*)\]$/, '$1');
  if (bare.includes('%'))
    return { ok: false, reason: `address ${bare} has an IPv6 zone id, which names a local interface` };
  if (!isIP(bare)) return { ok: false, reason: `${bare} is not an IP address` };
  const addr = ipaddr.parse(bare);
  const canonical = addr.toString();
  if (METADATA_ADDRESSES.has(canonical)) {
    return inAllowedCidr(addr, allow, true)
      ? { ok: true }
      : { ok: false, reason: `address ${canonical} is a cloud metadata service` };
  }
  if (inAllowedCidr(addr, allow, false)) return { ok: true };
  if (addr.kind() === 'ipv6') {
    const inner = embeddedIPv4(addr as ipaddr.IPv6);
    if (inner) {
      const v = checkAddress(inner.v4.toString(), allow);
      return v.ok
        ? v
        : { ok: false, reason: `address ${canonical} is ${inner.form} for ${inner.v4.toString()}: ${v.reason}` };
    }
  }
  const range = addr.range();
  if (range === 'unicast') return { ok: true };
  return { ok: false, reason: `address ${canonical} is ${RANGE_WORDS[range] ?? range}` };
}

export interface CheckedUrl {
  url: URL;
  /** The host as the URL parser left it, lower-case, without brackets or a trailing dot. */
  host: string;
  /** Set when the host is an IP literal (already checked). */
  ip: string | null;
  /** The host is listed by name in WEBHOOK_ALLOW_HOSTS: its addresses are not checked. */
  allowedByName: boolean;
}

/**
 * Everything that can be checked without DNS: a parseable absolute http(s) URL, no user
 * info, and a host that is neither a blocked name nor a blocked literal address. The WHATWG
 * parser has already turned decimal, hex, octal and short IPv4 forms, percent-encoding,
 * full-width digits and backslashes into their plain form, so the guard sees what a
 * connection would use.
 */
export function checkWebhookUrl(
  raw: string,
  allow: AllowList = EMPTY_ALLOW_LIST,
): ({ ok: true } & CheckedUrl) | { ok: false; reason: string } {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { ok: false, reason: 'it is not an absolute URL' };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    return { ok: false, reason: `scheme ${url.protocol.replace(/:$/, '')} is not http or https` };
  if (url.username || url.password)
    return { ok: false, reason: 'it contains user info (user@host); put credentials in the path or query instead' };
  let host = url.hostname.toLowerCase();
  if (host.startsWith('[')) host = host.slice(1, -1);
  host = host.replace(/\.$/, '');
  if (!host) return { ok: false, reason: 'it has no host' };
  if (isIP(host)) {
    const v = checkAddress(host, allow);
    return v.ok ? { ok: true, url, host, ip: host, allowedByName: false } : { ok: false, reason: v.reason };
  }
  if (allow.hosts.has(host)) return { ok: true, url, host, ip: null, allowedByName: true };
  if (BLOCKED_NAMES.has(host) || BLOCKED_SUFFIXES.some((s) => host.endsWith(s)))
    return { ok: false, reason: `host ${host} is a local or metadata name` };
  return { ok: true, url, host, ip: null, allowedByName: false };
}

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/** Resolves a host to every address it has. Injected in tests (rebinding, private answers). */
export type Resolver = (host: string) => Promise<ResolvedAddress[]>;

export const systemResolver: Resolver = async (host) =>
  (await dnsLookup(host, { all: true, verbatim: true })).map((a) => ({
    address: a.address,
    family: a.family === 6 ? 6 : 4,
  }));

/**
 * The delivery-time check: the URL check again (the allow-list may have changed), then the
 * host's addresses, every one of them: one internal address among public ones is enough to
 * refuse, since the connection could pick it. Returns the addresses to pin the connection to.
 */
export async function vetDestination(
  raw: string,
  allow: AllowList,
  resolve: Resolver = systemResolver,
): Promise<
  { ok: true; checked: CheckedUrl; addresses: ResolvedAddress[] } | { ok: false; reason: string; retryable: boolean }
> {
  const c = checkWebhookUrl(raw, allow);
  if (!c.ok) return { ok: false, reason: c.reason, retryable: false };
  if (c.ip) return { ok: true, checked: c, addresses: [{ address: c.ip, family: isIP(c.ip) === 6 ? 6 : 4 }] };
  let addresses: ResolvedAddress[];
  try {
    addresses = await resolve(c.host);
  } catch (e) {
    return {
      ok: false,
      reason: `host ${c.host} did not resolve (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      retryable: true,
    };
  }
  if (addresses.length === 0) return { ok: false, reason: `host ${c.host} has no addresses`, retryable: true };
  if (!c.allowedByName) {
    for (const a of addresses) {
      const v = checkAddress(a.address, allow);
      if (!v.ok)
        return { ok: false, reason: `host ${c.host} resolves to a refused address: ${v.reason}`, retryable: false };
    }
  }
  return { ok: true, checked: c, addresses };
}

/**
 * A `net.connect` lookup that answers only the vetted addresses, whatever name it is asked
 * for: the socket connects to what was checked, never to a fresh DNS answer. Handles both
 * callback shapes (`all: true` gives an array; Node 20's autoSelectFamily asks for it).
 */
export function pinnedLookup(addresses: readonly ResolvedAddress[]): LookupFunction {
  const list = addresses.map((a) => ({ address: a.address, family: a.family }));
  return (_host: string, options: unknown, callback?: unknown) => {
    const cb = (typeof options === 'function' ? options : callback) as (
      err: Error | null,
      address: unknown,
      family?: number,
    ) => void;
    const opts = (typeof options === 'object' && options !== null ? options : {}) as {
      all?: boolean;
      family?: number | string;
    };
    const fam = opts.family === 'IPv4' ? 4 : opts.family === 'IPv6' ? 6 : Number(opts.family ?? 0);
    const matching = fam === 4 || fam === 6 ? list.filter((a) => a.family === fam) : list;
    process.nextTick(() => {
      if (matching.length === 0) {
        const err = Object.assign(new Error(`no vetted address of family ${fam}`), { code: 'ENOTFOUND' });
        return cb(err, opts.all ? [] : undefined);
      }
      if (opts.all) cb(null, matching);
      else cb(null, matching[0]!.address, matching[0]!.family);
    });
  };
}

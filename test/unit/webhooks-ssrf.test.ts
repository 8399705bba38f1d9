import { describe, expect, it } from 'vitest';
import {
  checkAddress,
  checkWebhookUrl,
  parseAllowList,
  pinnedLookup,
  vetDestination,
  type ResolvedAddress,
  type Resolver,
} from '../../src/webhooks/ssrf.js';

const refused = (url: string, allow = parseAllowList(undefined)) => {
  const r = checkWebhookUrl(url, allow);
  if (r.ok) throw new Error(`${url} was allowed (host ${r.host})`);
  return r.reason;
};

/**
 * Every form here reaches an internal address or name. Several are normalised by the WHATWG
 * URL parser before the guard sees them (decimal, hex, octal, short IPv4, percent-encoding,
 * full-width digits, backslashes); the test feeds the raw string, as a client would send it.
 */
const BYPASSES: [string, RegExp][] = [
  ['http://127.0.0.1/', /loopback/],
  ['http://2130706433/', /127\.0\.0\.1 is loopback/],
  ['http://0x7f000001/', /127\.0\.0\.1 is loopback/],
  ['http://0177.0.0.1/', /127\.0\.0\.1 is loopback/],
  ['http://0000000177.0.0.1/', /127\.0\.0\.1 is loopback/],
  ['http://127.1/', /127\.0\.0\.1 is loopback/],
  ['http://127.0.1/', /127\.0\.0\.1 is loopback/],
  ['http://0x7f.1/', /127\.0\.0\.1 is loopback/],
  ['http://127.0.0.1./', /loopback/],
  ['http://%31%32%37.0.0.1/', /loopback/],
  ['http://①②⑦.0.0.1/', /loopback/],
  ['http://127。0。0。1/', /loopback/],
  ['http:\\\\127.0.0.1\\hook', /loopback/],
  ['http://0/', /unspecified/],
  ['http://0.0.0.0:8080/', /unspecified/],
  ['http://[::]/', /unspecified/],
  ['http://[::1]/', /loopback/],
  ['http://[0:0:0:0:0:0:0:1]/', /loopback/],
  ['http://[::ffff:127.0.0.1]/', /IPv4-mapped for 127\.0\.0\.1/],
  ['http://[0:0:0:0:0:ffff:7f00:1]/', /IPv4-mapped for 127\.0\.0\.1/],
  ['http://[::ffff:7f00:1]/', /IPv4-mapped/],
  ['http://[::ffff:169.254.169.254]/', /metadata/],
  ['http://[::127.0.0.1]/', /IPv4-compatible for 127\.0\.0\.1/],
  ['http://[::7f00:1]/', /IPv4-compatible/],
  ['http://[64:ff9b::10.0.0.1]/', /NAT64 for 10\.0\.0\.1/],
  ['http://[64:ff9b::7f00:1]/', /NAT64 for 127\.0\.0\.1/],
  ['http://[2002:7f00:1::]/', /6to4 for 127\.0\.0\.1/],
  ['http://[2002:c0a8:101::1]/', /6to4 for 192\.168\.1\.1/],
  ['http://[::ffff:0:a00:1]/', /IPv4-translated/],
  ['http://10.0.0.1/', /private/],
  ['http://172.16.5.4/', /private/],
  ['http://172.31.255.255/', /private/],
  ['http://192.168.0.1/', /private/],
  ['http://100.64.0.1/', /carrier-grade NAT/],
  ['http://100.127.255.254/', /carrier-grade NAT/],
  ['http://169.254.1.1/', /link-local/],
  ['http://169.254.169.254/latest/meta-data/', /cloud metadata/],
  ['http://[fd00:ec2::254]/', /cloud metadata/],
  ['http://[fe80::1]/', /link-local/],
  ['http://[febf::1]/', /link-local/],
  ['http://[fc00::1]/', /unique-local/],
  ['http://[fdff:ffff::1]/', /unique-local/],
  ['http://[fec0::1]/', /site-local/],
  ['http://224.0.0.1/', /multicast/],
  ['http://239.255.255.250/', /multicast/],
  ['http://[ff02::1]/', /multicast/],
  ['http://255.255.255.255/', /broadcast/],
  ['http://240.0.0.1/', /reserved/],
  ['http://192.0.2.1/', /reserved/],
  ['http://198.18.0.1/', /reserved/],
  ['http://[2001:db8::1]/', /reserved/],
  ['http://localhost/', /local or metadata name/],
  ['http://LOCALHOST:4080/', /local or metadata name/],
  ['http://localhost./', /local or metadata name/],
  ['http://%6c%6f%63%61%6c%68%6f%73%74/', /local or metadata name/],
  ['http://api.localhost/', /local or metadata name/],
  ['http://a.b.localhost./', /local or metadata name/],
  ['http://metadata.google.internal/computeMetadata/v1/', /local or metadata name/],
  ['http://METADATA.GOOGLE.INTERNAL./', /local or metadata name/],
  ['http://good.com@127.0.0.1/', /user info/],
  ['http://127.0.0.1:80@good.com/', /user info/],
  ['http://user:pass@example.com/', /user info/],
  ['ftp://example.com/', /scheme ftp/],
  ['file:///etc/passwd', /scheme file/],
  ['gopher://127.0.0.1:6379/_INFO', /scheme gopher/],
  ['javascript:alert(1)', /scheme javascript/],
  ['//127.0.0.1/', /not an absolute URL/],
  ['http://[fe80::1%25eth0]/', /not an absolute URL/],
  ['not a url', /not an absolute URL/],
];

describe('webhook SSRF guard: URL check', () => {
  it(`refuses ${BYPASSES.length} internal and malformed forms, each with its reason`, () => {
    expect(BYPASSES.length).toBeGreaterThanOrEqual(30);
    for (const [url, reason] of BYPASSES) expect(refused(url), url).toMatch(reason);
  });

  it('allows public hosts and addresses, any port', () => {
    for (const url of [
      'https://example.com/hooks/batch?token=abc',
      'http://8.8.8.8:8080/',
      'https://[2606:4700:4700::1111]/x',
      'http://hooks.example.org./',
      'http://[64:ff9b::808:808]/',
      'http://[2002:808:808::1]/',
      'http://[::ffff:8.8.8.8]/',
    ]) {
      const r = checkWebhookUrl(url);
      expect(r.ok, url).toBe(true);
    }
  });

  it('what reaches the guard is the parsed host, not the raw text: fragments and backslashes do not hide a host', () => {
    // WHATWG: the host is evil.com in both; the @127.0.0.1 part is a fragment / a path.
    for (const url of ['http://evil.com#@127.0.0.1/', 'http://evil.com\\@127.0.0.1/']) {
      const r = checkWebhookUrl(url);
      expect(r.ok && r.host, url).toBe('evil.com');
    }
  });

  it('the allow-list lets an operator reach a listed internal receiver, and nothing next to it', () => {
    const allow = parseAllowList('127.0.0.1, receiver.internal, 10.2.0.0/16, [::1]');
    expect(checkWebhookUrl('http://127.0.0.1:9000/', allow).ok).toBe(true);
    expect(checkWebhookUrl('http://2130706433:9000/', allow).ok).toBe(true);
    expect(checkWebhookUrl('http://[::1]/', allow).ok).toBe(true);
    expect(checkWebhookUrl('http://10.2.3.4/', allow).ok).toBe(true);
    expect(checkWebhookUrl('http://RECEIVER.internal./hook', allow).ok).toBe(true);
    expect(refused('http://127.0.0.2/', allow)).toMatch(/loopback/);
    expect(refused('http://10.3.0.1/', allow)).toMatch(/private/);
    expect(refused('http://localhost/', allow)).toMatch(/local/);
  });

  it('a CIDR that covers a metadata address does not allow it; only the exact address does', () => {
    expect(refused('http://169.254.169.254/', parseAllowList('169.254.0.0/16'))).toMatch(/metadata/);
    expect(checkWebhookUrl('http://169.254.1.1/', parseAllowList('169.254.0.0/16')).ok).toBe(true);
    expect(checkWebhookUrl('http://169.254.169.254/', parseAllowList('169.254.169.254')).ok).toBe(true);
  });

  it('rejects an allow-list entry it cannot read, naming it', () => {
    expect(() => parseAllowList('10.0.0.0/99')).toThrow(/10\.0\.0\.0\/99/);
    expect(() => parseAllowList('http://x/')).toThrow(/http:\/\/x\//);
  });
});

describe('webhook SSRF guard: addresses from DNS', () => {
  it('checks resolved addresses the same way, zone ids included', () => {
    expect(checkAddress('127.0.0.53').ok).toBe(false);
    expect(checkAddress('fe80::1%eth0')).toMatchObject({ ok: false, reason: expect.stringMatching(/zone/) });
    expect(checkAddress('::ffff:10.1.1.1')).toMatchObject({ ok: false, reason: expect.stringMatching(/private/) });
    expect(checkAddress('93.184.216.34').ok).toBe(true);
  });

  const resolverOf = (answers: ResolvedAddress[][]): Resolver & { calls: number } => {
    const r = Object.assign(
      async () => {
        const a = answers[Math.min(r.calls, answers.length - 1)]!;
        r.calls += 1;
        return a;
      },
      { calls: 0 },
    );
    return r;
  };

  it('refuses a host if any one of its addresses is internal', async () => {
    const resolve = resolverOf([
      [
        { address: '93.184.216.34', family: 4 },
        { address: '10.0.0.7', family: 4 },
      ],
    ]);
    const v = await vetDestination('https://mixed.example/', parseAllowList(undefined), resolve);
    expect(v).toMatchObject({ ok: false, retryable: false, reason: expect.stringMatching(/10\.0\.0\.7 is private/) });
  });

  it('refuses a name that resolves to loopback (e.g. 127.0.0.1.nip.io)', async () => {
    const v = await vetDestination(
      'http://127.0.0.1.nip.io/',
      parseAllowList(undefined),
      resolverOf([[{ address: '127.0.0.1', family: 4 }]]),
    );
    expect(v.ok).toBe(false);
  });

  it('a DNS failure is retryable, a refused address is not', async () => {
    const failing: Resolver = async () => {
      throw Object.assign(new Error('getaddrinfo ENOTFOUND'), { code: 'ENOTFOUND' });
    };
    expect(await vetDestination('http://nowhere.example/', parseAllowList(undefined), failing)).toMatchObject({
      ok: false,
      retryable: true,
      reason: expect.stringMatching(/ENOTFOUND/),
    });
  });

  it('DNS rebinding: the connection is pinned to the vetted answer, later answers are never used', async () => {
    // First answer public, every later one 127.0.0.1: a guard that checks, then lets the
    // socket resolve again, would connect to loopback.
    const resolve = resolverOf([[{ address: '93.184.216.34', family: 4 }], [{ address: '127.0.0.1', family: 4 }]]);
    const v = await vetDestination('http://rebind.example/', parseAllowList(undefined), resolve);
    if (!v.ok) throw new Error(v.reason);
    const lookup = pinnedLookup(v.addresses);
    const ask = (opts: object) =>
      new Promise<unknown>((res, rej) =>
        lookup('rebind.example', opts, (err: Error | null, address: unknown, family?: unknown) =>
          err ? rej(err) : res({ address, family }),
        ),
      );
    for (let i = 0; i < 3; i++) {
      expect(await ask({})).toEqual({ address: '93.184.216.34', family: 4 });
      expect(await ask({ all: true })).toEqual({
        address: [{ address: '93.184.216.34', family: 4 }],
        family: undefined,
      });
    }
    expect(resolve.calls).toBe(1);
    // The second answer would have been refused had anything asked for it.
    expect((await vetDestination('http://rebind.example/', parseAllowList(undefined), resolve)).ok).toBe(false);
  });

  it('the pinned lookup honours a family filter and fails cleanly when none matches', async () => {
    const lookup = pinnedLookup([{ address: '2606:4700::1111', family: 6 }]);
    const err = await new Promise<unknown>((res) => lookup('x', { family: 4 }, (e: unknown) => res(e)));
    expect(err).toMatchObject({ code: 'ENOTFOUND' });
  });

  it('a host allowed by name skips the address check (an internal receiver behind DNS)', async () => {
    const v = await vetDestination(
      'http://receiver.internal/',
      parseAllowList('receiver.internal'),
      resolverOf([[{ address: '10.9.9.9', family: 4 }]]),
    );
    expect(v).toMatchObject({ ok: true, addresses: [{ address: '10.9.9.9', family: 4 }] });
  });
});

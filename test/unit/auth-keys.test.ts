import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { hashSecret, maskSecret, newSecret } from '../../src/auth/keys-admin.js';
import {
  isLoopbackHost,
  openModeAllowed,
  assertListenAllowed,
  UnauthenticatedListenError,
} from '../../src/auth/open-mode.js';
import { canSee, listScope, ownerFor } from '../../src/auth/principal.js';
import { isPublicRoute } from '../../src/auth/plugin.js';

describe('API key secrets', () => {
  it('are bw- followed by at least 40 base62 characters, all different', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const s = newSecret();
      expect(s).toMatch(/^bw-[A-Za-z0-9]{40,}$/);
      seen.add(s);
    }
    expect(seen.size).toBe(200);
  });

  it('use every base62 character (no alphabet slice left out)', () => {
    const chars = new Set(Array.from({ length: 100 }, () => newSecret().slice(3)).join(''));
    expect(chars.size).toBe(62);
  });

  it('are stored as their SHA-256 hex', () => {
    const s = newSecret();
    expect(hashSecret(s)).toBe(createHash('sha256').update(s).digest('hex'));
    expect(hashSecret(s)).toMatch(/^[0-9a-f]{64}$/);
  });

  it('are shown masked: 5 characters, an ellipsis and the last 2', () => {
    const s = 'bw-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG';
    expect(maskSecret(s)).toBe('bw-ab…FG');
    expect(maskSecret('test-key')).toBe('…');
  });
});

describe('open mode', () => {
  it('counts 127.0.0.0/8, ::1, mapped loopback and localhost as loopback', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', '::ffff:127.0.0.1', 'localhost', 'LOCALHOST'])
      expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.10', 'example.com', '::ffff:10.0.0.1'])
      expect(isLoopbackHost(h), h).toBe(false);
  });

  it('is allowed on loopback, or anywhere with ALLOW_UNAUTHENTICATED', () => {
    expect(openModeAllowed('127.0.0.1', false)).toBe(true);
    expect(openModeAllowed('0.0.0.0', false)).toBe(false);
    expect(openModeAllowed('0.0.0.0', true)).toBe(true);
  });

  it('refuses to listen on a public interface with no keys, in one line that says what to do', () => {
    const none = { hasActive: () => false };
    expect(() => assertListenAllowed('127.0.0.1', false, none)).not.toThrow();
    expect(() => assertListenAllowed('0.0.0.0', false, { hasActive: () => true })).not.toThrow();
    expect(() => assertListenAllowed('0.0.0.0', true, none)).not.toThrow();
    let err: unknown;
    try {
      assertListenAllowed('0.0.0.0', false, none);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UnauthenticatedListenError);
    const msg = (err as Error).message;
    expect(msg).not.toContain('\n');
    expect(msg).toContain('npm run keys -- create');
    expect(msg).toContain('ALLOW_UNAUTHENTICATED=1');
  });
});

describe('principal rules', () => {
  const a = { keyId: 'key_a', project: 'A', admin: false };
  const admin = { keyId: 'key_z', project: 'ops', admin: true };
  it('a project key sees its project only; admins and open mode see everything', () => {
    expect(canSee(a, 'A')).toBe(true);
    expect(canSee(a, 'B')).toBe(false);
    expect(canSee(a, null)).toBe(false);
    expect(canSee(admin, 'B')).toBe(true);
    expect(canSee(null, 'B')).toBe(true);
    expect([ownerFor(a), ownerFor(admin), ownerFor(null)]).toEqual(['A', 'ops', null]);
    expect([listScope(a), listScope(admin), listScope(null)]).toEqual(['A', undefined, undefined]);
  });

  it('only the two probes are public (HEAD as their GET twin)', () => {
    expect(isPublicRoute('GET', '/healthz')).toBe(true);
    expect(isPublicRoute('HEAD', '/readyz')).toBe(true);
    expect(isPublicRoute('POST', '/healthz')).toBe(false);
    expect(isPublicRoute('GET', '/health')).toBe(false);
    expect(isPublicRoute('GET', undefined)).toBe(false);
  });
});

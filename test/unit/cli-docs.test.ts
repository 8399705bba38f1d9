import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/main.js';
import { EXIT } from '../../src/cli/errors.js';

const doc = readFileSync(new URL('../../docs/cli.md', import.meta.url), 'utf8');
const program = buildProgram(
  () => {
    throw new Error('not run');
  },
  async () => undefined,
);

describe('docs/cli.md', () => {
  it('has a section for every command and mentions every option', () => {
    for (const cmd of program.commands) {
      if (cmd.name() === 'help') continue;
      const sub = cmd.commands.map((c) => c.name());
      const heading = sub.length ? `### \`${cmd.name()} ${sub.join('|')}\`` : `### \`${cmd.name()}`;
      expect(doc, `section for ${cmd.name()}`).toContain(heading);
      for (const c of [cmd, ...cmd.commands]) {
        for (const o of c.options) expect(doc, `${cmd.name()} ${o.long}`).toContain(o.long!);
      }
    }
  });

  it('lists every exit code', () => {
    for (const [name, code] of Object.entries(EXIT)) expect(doc, `exit code ${name}`).toContain(`| \`${code}\` |`);
  });
});

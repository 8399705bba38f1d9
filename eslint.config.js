// eslint: typescript-eslint's type-checked rules on the TypeScript (the one tsconfig.json, through
// the project service), the recommended JavaScript rules on the few .js/.mjs files, the dashboard as
// browser ES modules. Run by `npm run lint`, and so by `npm test`. Each relaxation below says why.
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default defineConfig([
  // Generated or recorded output, and data: nothing here is written by hand.
  globalIgnores(['node_modules/', 'data/', 'dist/', 'coverage/', 'bench/results/', '.cache/', 'migrations/']),

  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // `_` marks a binding kept on purpose: a rest sibling that drops keys (`{ secret: _s, ...rest }`),
      // a positional parameter an interface requires.
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
          ignoreRestSiblings: true,
        },
      ],
      // Passing on a reason we were handed (`reject(signal.reason)`, a caught `err`) is not inventing a
      // non-Error; the same allowance `only-throw-error` makes by default. `reject('text')` still fails.
      '@typescript-eslint/prefer-promise-reject-errors': [
        'error',
        { allowThrowingAny: true, allowThrowingUnknown: true },
      ],
    },
  },

  {
    // Fastify's contract: a plugin (and a hook or handler) that has nothing to await is still declared
    // `async`, because its promise is how Fastify learns that it is done or what it returns (a plain
    // function plugin would have to take and call `done`). `async` without `await` is the API here.
    files: ['src/api/**/*.ts', 'src/auth/**/*.ts'],
    rules: { '@typescript-eslint/require-await': 'off' },
  },

  {
    files: ['test/**/*.ts'],
    rules: {
      // Tests read JSON bodies (`res.json()`, `JSON.parse`) and assert on their fields: those values
      // are `any` by nature, and typing each body would only restate the assertions that follow.
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      // Stand-ins for async dependencies (a fake runner, router or fetch) are `async` to keep the
      // signature and the rejection semantics of what they replace, with nothing to await inside.
      '@typescript-eslint/require-await': 'off',
    },
  },

  {
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    extends: [js.configs.recommended],
    languageOptions: { globals: globals.node },
  },
  {
    // The dashboard: plain ES modules served to the browser as they are (no build step, no types).
    files: ['src/dashboard/**/*.js'],
    languageOptions: { sourceType: 'module', globals: globals.browser },
  },
]);

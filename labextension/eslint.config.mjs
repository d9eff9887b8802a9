// Lint of the TypeScript sources and tests (npm run lint); the type check is npm run typecheck.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['lib/', 'build-test/', 'node_modules/', '../jupyter_asgard/labextension/', '**/*.js', '**/*.mjs'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        project: ['./tsconfig.json', './tsconfig.test.json'],
        tsconfigRootDir: import.meta.dirname
      }
    },
    rules: {
      '@typescript-eslint/naming-convention': [
        'error',
        { selector: 'interface', format: ['PascalCase'], custom: { regex: '^I[A-Z]', match: true } }
      ],
      '@typescript-eslint/no-floating-promises': 'error',
      // Lumino's signals take the receiver as connect()'s second argument.
      '@typescript-eslint/unbound-method': 'off',
      '@typescript-eslint/explicit-module-boundary-types': 'error',
      eqeqeq: 'error',
      curly: 'error',
      'prefer-const': 'error',
      'no-console': ['error', { allow: ['warn', 'error'] }]
    }
  },
  {
    // node:test's test() and describe() return promises that the runner itself awaits.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-floating-promises': 'off' }
  }
);

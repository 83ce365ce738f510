// Lint, including the layering DESIGN.md sets out: shared/ is runtime-neutral, proxy/ never touches
// Electron, renderer/ never touches Node. A wrong import fails `npm test`.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

const NODE_BUILTINS = [
  'assert', 'buffer', 'child_process', 'cluster', 'crypto', 'dgram', 'dns', 'events', 'fs', 'fs/promises', 'http', 'http2',
  'https', 'net', 'os', 'path', 'perf_hooks', 'process', 'readline', 'stream', 'stream/promises', 'tls', 'url', 'util',
  'v8', 'vm', 'worker_threads', 'zlib',
];
const noNode = [{ group: ['node:*'], message: 'this layer must not import Node built-ins (see DESIGN.md, Folders)' }];
const noNodeNames = NODE_BUILTINS.map((name) => ({ name, message: 'this layer must not import Node built-ins (see DESIGN.md, Folders)' }));
const noElectron = [{ group: ['electron', 'electron/*'], message: 'the gateway never imports Electron (see DESIGN.md, Processes)' }];

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'out/**', 'coverage/**', 'docs/**', 'schemas/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@typescript-eslint/no-explicit-any': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    files: ['shared/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { paths: [...noNodeNames, { name: 'electron', message: 'shared/ is runtime-neutral' }], patterns: [...noNode, ...noElectron, { group: ['../*', '!./*'], message: 'shared/ imports nothing outside shared/' }] }],
      'no-restricted-globals': ['error', 'window', 'document', 'process', 'Buffer', 'require'],
    },
  },
  {
    files: ['proxy/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [...noElectron, { group: ['**/main/*', '**/renderer/*'], message: 'proxy/ may import only shared/' }] }],
    },
  },
  {
    files: ['renderer/**/*.ts', 'renderer/**/*.tsx'],
    languageOptions: { globals: { ...globals.browser } },
    rules: {
      'no-restricted-imports': ['error', { paths: noNodeNames, patterns: [...noNode, ...noElectron, { group: ['**/proxy/*', '**/main/*'], message: 'renderer/ talks to the gateway over HTTP and WebSocket only; import shared/' }] }],
      'no-restricted-globals': ['error', 'process', 'Buffer', 'require'],
    },
  },
  {
    files: ['main/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['**/renderer/*'], message: 'main/ may import shared/ and the proxy entry only' }, { group: ['**/proxy/*/**', '!**/proxy/gateway', '!**/proxy/entry'], message: 'main/ may import only the proxy entry (proxy/entry.ts)' }] }],
    },
  },
);

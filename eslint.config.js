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
const proxyOnlyShared = { group: ['**/main/*', '**/renderer/*'], message: 'proxy/ may import only shared/' };
// The floors inside proxy/ (docs/ARCHITECTURE.md): core services, then the protocol adapters and the
// control plane, then the gateway and the CLI. Nothing imports a floor above its own.
const noGatewayAbove = { group: ['**/gateway', '**/cli', '**/cli/*', '**/entry'], message: 'only the entry and the CLI start the gateway (floors: docs/ARCHITECTURE.md)' };
const noControl = { group: ['**/control/*', '**/control/**'], message: 'nothing below the gateway imports the control plane (floors: docs/ARCHITECTURE.md)' };
const noAdapters = { group: ['**/http/*', '**/postgres/*', '**/ssh/*'], message: 'core services do not import the protocol adapters (floors: docs/ARCHITECTURE.md)' };

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
      'no-restricted-imports': ['error', { patterns: [...noElectron, proxyOnlyShared] }],
    },
  },
  {
    files: ['proxy/{http,postgres,ssh}/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [...noElectron, proxyOnlyShared, noControl, noGatewayAbove] }],
    },
  },
  {
    files: ['proxy/{masking,policy,identity,audit,approvals,connections}/**/*.ts', 'proxy/{bus,net,services,log,ids,config,key-files,secret-wrapper,worker-source}.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [...noElectron, proxyOnlyShared, noControl, noGatewayAbove, noAdapters] }],
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
      'no-restricted-imports': ['error', { patterns: [{ group: ['**/renderer/*'], message: 'main/ may import shared/ and the proxy entry only' }, { group: ['**/proxy/*/**', '!**/proxy/gateway', '!**/proxy/entry', '!**/proxy/identity/native-login'], message: 'main/ may import only the proxy entry (proxy/entry.ts) and the native sign-in it shares with the CLI (proxy/identity/native-login.ts)' }] }],
    },
  },
);

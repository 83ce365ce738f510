#!/usr/bin/env node
// The `custody` command. Runs the TypeScript sources through tsx's loader, so a checkout works
// without a build step; the desktop app runs the bundled gateway from dist/ instead.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../proxy/cli.ts');
process.exitCode = await main(process.argv.slice(2));

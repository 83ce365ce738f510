/**
 * A gateway in its own process, for tests that kill it with SIGKILL: `node --import tsx
 * test/support/gateway-child.ts <data dir> <config JSON>`. Prints one line `ready <http> <control>
 * <first admin key or ->` once it listens.
 */
import { Config } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';

const [dataDir, json] = process.argv.slice(2) as [string, string];
const gw = await Gateway.start({ config: Config.parse(JSON.parse(json)), dataDir, log: silentLogger });
process.stdout.write(`ready ${gw.address('http')} ${gw.address('control')} ${gw.firstKey ?? '-'}\n`);
process.once('SIGTERM', () => void gw.stop().then(() => process.exit(0)));

/**
 * What a rule set is checked against (proxy/policy/check.ts): the connections that exist now
 * (config and console), the masking rules and the custom detectors in force. The gateway checks
 * stored versions against it at start, the control plane every edit, the CLI a file.
 */
import type { Config } from '../../shared/config';
import type { AuditStore } from '../audit/store';
import { connectionsNow } from '../connections/store';
import type { PolicyContext } from './check';

export function policyContext(s: { config: Pick<Config, 'connections' | 'masking' | 'detectors'>; store: Pick<AuditStore, 'db'> }): PolicyContext {
  return { connections: connectionsNow(s.config, s.store), masking: s.config.masking, detectors: s.config.detectors.map((d) => d.id) };
}

/**
 * Masking versions: every `{detectors, masking}` set the gateway has enforced, a versioned document
 * (proxy/audit/versioned-document.ts) of kind `masking`, each change recorded as `masking.changed`
 * with the full rules. At start the config file's masking wins when the file changed; otherwise the
 * latest version (which may come from `PUT /api/masking`) stays in force.
 */
import type { MaskingVersion, MaskingVersionSummary } from '../../shared/api';
import type { CustomDetector, MaskingRule } from '../../shared/config';
import type { AuditStore } from '../audit/store';
import { type DocumentChange, type DocumentKind, VersionedDocument } from '../audit/versioned-document';
import type { EventBus } from '../bus';
import type { Logger } from '../log';
import { type MaskingConfig, validateMaskingConfig } from './engine';
import type { MaskingEngine } from './types';

const MASKING: DocumentKind<MaskingConfig, MaskingVersionSummary> = {
  kind: 'masking',
  noun: 'masking',
  fileNoun: "the config file's masking",
  changedEvent: 'masking.changed',
  updatedMessage: 'masking.updated',
  configHashKey: 'masking.configHash',
  decode: (body) => ({ detectors: body.detectors ?? [], masking: body.masking ?? [] }),
  hashed: (content) => ({ detectors: content.detectors, masking: content.masking }),
  // Listings carry the rules and count the rules and custom detectors.
  summarize: (version) => ({ ...version, rules: version.masking.length, detectors: version.detectors.length }),
};

/** Every version of the masking rules (`GET /api/masking/versions`). */
export function maskingHistory(store: AuditStore): VersionedDocument<MaskingConfig, MaskingVersionSummary> {
  return new VersionedDocument(store, MASKING);
}

/** What a masking change touches besides the store. */
export interface MaskingDeps {
  store: AuditStore;
  bus: EventBus;
  masking: MaskingEngine;
  config: { masking: MaskingRule[]; detectors: CustomDetector[] };
}

export type MaskingChange = Omit<DocumentChange<MaskingConfig>, 'content'> & { config: MaskingConfig };

function enforce(deps: MaskingDeps, config: MaskingConfig): void {
  deps.masking.reload(config);
  deps.config.masking = config.masking;
  deps.config.detectors = config.detectors;
}

/**
 * Records a new version (row + chained `masking.changed` event, one transaction), then applies it
 * to the engine and publishes `masking.updated`. The config must already be validated
 * (validateMaskingConfig). Throws StoreUnavailableError when it cannot be recorded, and then the
 * running rules stay as they were.
 */
export function applyMaskingChange(deps: MaskingDeps, change: MaskingChange): MaskingVersion {
  const { config, ...who } = change;
  return maskingHistory(deps.store).change({ ...who, content: { detectors: config.detectors, masking: config.masking } }, (content) => enforce(deps, content), deps.bus);
}

/**
 * At gateway start: decide which masking to enforce (see the file comment) and record the config
 * file's masking as a version when it is new. Returns the version in force.
 */
export function syncMaskingAtStart(deps: MaskingDeps & { log: Logger }, configFile: string | undefined): MaskingVersion {
  return maskingHistory(deps.store).atStart(
    { bus: deps.bus, log: deps.log, configFile },
    { detectors: deps.config.detectors, masking: deps.config.masking },
    (stored) => {
      const checked = validateMaskingConfig({ detectors: stored.detectors, masking: stored.masking });
      return checked.ok ? { ok: true, content: checked.config } : { ok: false, problems: checked.issues.map((i) => i.message) };
    },
    (content) => enforce(deps, content),
  );
}

/**
 * Interim masking engine until the detectors land: with no masking rules configured there is
 * nothing to mask; with rules configured it refuses to start (fail closed) rather than forward
 * unmasked data.
 */
import type { Config, Connection } from '../../shared/config';
import { type ConnectionMasker, MaskingError, type MaskingEngine, type RowMasker } from './types';

export function createMaskingEngine(config: Pick<Config, 'masking' | 'detectors'>, _opts: { hmacKey: Buffer }): MaskingEngine {
  if (config.masking.length) throw new MaskingError('masking rules are configured but this build has no masking engine');
  const passthroughRows: RowMasker = {
    active: false,
    value: () => null,
    text: (text) => ({ text, spans: [], counts: {} }),
  };
  return {
    forConnection: (_c: Connection): ConnectionMasker | null => null,
    rows: () => passthroughRows,
    reload(next) {
      if (next.masking.length) throw new MaskingError('masking rules cannot be applied: this build has no masking engine');
    },
  };
}

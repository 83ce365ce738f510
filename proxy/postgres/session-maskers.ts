/**
 * The row maskers one PostgreSQL session uses: the connection's own rules (`current`), picked up
 * again before each batch because rules can change while a connection stays open (console edits),
 * and one more per set of rules a `mask` decision adds. `current` also masks what reaches the log.
 */
import type { Connection } from '../../shared/config';
import type { MaskSpan } from '../../shared/events';
import type { MaskingEngine, RowMasker } from '../masking/types';
import type { PolicyDecision } from '../policy/types';

export class SessionMaskers {
  /** The connection's rules as of the current batch (set at login by the first `refresh`). */
  current!: RowMasker;
  private readonly byDecisionRules = new Map<string, RowMasker>();
  /** The engine's generation `current` was made under (undefined: make it again each time). */
  private madeUnder: number | undefined;

  constructor(
    private readonly masking: MaskingEngine,
    private readonly connection: Connection,
  ) {}

  /** Picks up the connection's current rules; throws when they cannot be applied. */
  refresh(): void {
    const generation = this.masking.generation?.();
    if (generation !== undefined && generation === this.madeUnder) return;
    this.current = this.masking.rows(this.connection);
    this.byDecisionRules.clear();
    this.madeUnder = generation;
  }

  /** The masker for a statement decided `mask`: the connection's rules plus the decision's. */
  forMaskDecision(decision: PolicyDecision): RowMasker {
    if (!decision.mask?.length) return this.current;
    const key = decision.mask.join(',');
    let masker = this.byDecisionRules.get(key);
    if (!masker) {
      masker = this.masking.rows(this.connection, decision.mask);
      this.byDecisionRules.set(key, masker);
    }
    return masker;
  }

  /** Text as the log may hold it, with where it was masked. */
  forLog(text: string): { text: string; spans: MaskSpan[] } {
    const masker = this.current;
    if (!masker.active) return { text, spans: [] };
    const masked = masker.text(text, 'log');
    return { text: masked.text, spans: masked.spans };
  }
}

// Toasts (renderer/stores/ui.ts): short-lived messages; the same message again replaces the one
// still showing instead of stacking a copy.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createUiStore } from '../../renderer/stores/ui';

describe('toasts', () => {
  it('shows a repeated message once, and keeps different ones', () => {
    const ui = createUiStore();
    ui.getState().toast('ok', 'Saved a new version of the rules.', 1000);
    ui.getState().toast('ok', 'Saved a new version of the rules.', 1000);
    assert.deepEqual(ui.getState().toasts.map((t) => t.text), ['Saved a new version of the rules.']);
    ui.getState().toast('error', 'Saved a new version of the rules.', 1000);
    ui.getState().toast('ok', 'Key revoked.', 1000);
    assert.equal(ui.getState().toasts.length, 3);
    for (const t of ui.getState().toasts) ui.getState().dismiss(t.id);
    assert.equal(ui.getState().toasts.length, 0);
  });
});

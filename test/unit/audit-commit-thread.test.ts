// The audit store with its commit thread (as the gateway opens it): one chain in call order across
// blocking and callback appends, transactions on the gateway's own connection, other writers to
// the same file, an unwritable file and a dead thread (both refuse: fail closed).
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import type { Worker } from 'node:worker_threads';
import type { AuditEvent, AuditEventInput } from '../../shared/events';
import { AuditStore, StoreUnavailableError } from '../../proxy/audit/store';
import { verifyStore } from '../../proxy/audit/verify/store';
import { tempDir } from '../support/tmp';

const ev = (n: number, session = 'ses_a'): AuditEventInput => ({ kind: 'http.request', session, actor: 'key:alice', connection: 'openai', payload: { n, body: 'x'.repeat(n % 7) } });

async function eventually<T>(check: () => Promise<T | undefined | false>, timeoutMs = 3000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

function appendAsync(store: AuditStore, inputs: AuditEventInput[]): Promise<StoreUnavailableError | null> {
  return new Promise((resolve) => store.appendAsync(inputs, resolve));
}

/** Runs `body` in another process with `store` open on `dir` as the gateway opens it (the body ends it). */
function gatewayProcess(dir: string, body: string, stdout: 'pipe' | 'inherit' = 'inherit'): ChildProcess {
  const storeModule = new URL('../../proxy/audit/store.ts', import.meta.url).href;
  const script = `
    const { AuditStore } = await import(${JSON.stringify(storeModule)});
    const store = AuditStore.open(${JSON.stringify(dir)}, { commitThread: true });
    ${body}`;
  return spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', stdout, 'inherit'] });
}

/** The path of the journal's only file. */
function journalFile(dir: string): string {
  const jdir = `${dir}/custody.db.journal`;
  return `${jdir}/${readdirSync(jdir).find((f) => f.endsWith('.jsonl'))!}`;
}

describe('audit store with a commit thread', () => {
  it('keeps one chain in call order across callback and blocking appends', async () => {
    const dir = tempDir();
    const store = AuditStore.open(dir, { commitThread: true });
    assert.equal(store.threaded, true);
    const heard: AuditEvent[] = [];
    store.onAppend((e) => heard.push(e));
    const acks: Promise<StoreUnavailableError | null>[] = [];
    for (let i = 1; i <= 30; i++) {
      if (i % 10 === 0) {
        const [e] = store.appendMany([ev(i)]);
        assert.equal(e!.seq, i, 'a blocking append returns after everything sent before it');
      } else acks.push(appendAsync(store, [ev(i)]));
    }
    assert.deepEqual(await Promise.all(acks), acks.map(() => null));
    assert.deepEqual(
      heard.map((e) => [e.seq, (e.payload as { n: number }).n]),
      Array.from({ length: 30 }, (_, i) => [i + 1, i + 1]),
      'listeners hear every event once, in seq order, with the seq its position gave it',
    );
    assert.equal(store.head().size, 30);
    assert.equal(store.head().hash, heard[29]!.hash);
    assert.equal(store.session('ses_a')?.requests, 30, 'the session index is current for a reader');
    store.close();
    const report = verifyStore(dir);
    assert.equal(report.ok, true, JSON.stringify(report.failure));
    assert.equal(report.events, 30);
  });

  it('commits appends inside a transaction on the gateway thread, and the thread continues the chain', async () => {
    const dir = tempDir();
    const store = AuditStore.open(dir, { commitThread: true });
    const first = appendAsync(store, [ev(1), ev(2)]);
    store.transaction(() => {
      store.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('k', 'v');
      assert.equal(store.append(ev(3)).seq, 3, 'the thread was drained before the transaction began');
    });
    assert.equal(await first, null);
    assert.throws(
      () =>
        store.transaction(() => {
          store.append(ev(99));
          throw new Error('rolled back');
        }),
      /rolled back/,
    );
    assert.equal(await appendAsync(store, [ev(4)]), null);
    assert.equal(store.appendMany([ev(5)])[0]!.seq, 5);
    store.close();
    const report = verifyStore(dir);
    assert.equal(report.ok, true, JSON.stringify(report.failure));
    assert.equal(report.events, 5, 'the rolled-back event is not in the log');
  });

  it('continues the chain another process wrote meanwhile', async () => {
    const dir = tempDir();
    const store = AuditStore.open(dir, { commitThread: true });
    assert.equal(await appendAsync(store, [ev(1)]), null);
    const cli = AuditStore.open(dir); // a CLI command next to the running gateway
    cli.append({ kind: 'key.created', actor: 'system', payload: { id: 'k1' } });
    cli.close();
    // Journaled after a place the other process took: given the next free places when folded.
    assert.equal(await appendAsync(store, [ev(3)]), null);
    store.append(ev(4));
    store.close();
    assert.equal(verifyStore(dir).ok, true);
    const again = AuditStore.open(dir);
    const events = again.events();
    assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4]);
    assert.equal(events.filter((e) => e.kind === 'key.created').length, 1);
    assert.deepEqual(events.filter((e) => e.kind === 'http.request').map((e) => (e.payload as { n: number }).n), [1, 3, 4], 'the gateway\'s events keep their order');
    again.close();
  });

  it('refuses appends while the database cannot be written, and loses none it took', async () => {
    const dir = tempDir();
    const store = AuditStore.open(dir, { commitThread: true });
    assert.equal(await appendAsync(store, [ev(1)]), null);
    store.writerPragma('query_only = ON');
    // Journaled before the database failed: recorded, and committed once it can be.
    assert.equal(await appendAsync(store, [ev(2)]), null);
    // Until the failed commit is reported, appends are still journaled (and so recorded).
    const accepted: number[] = [];
    let n = 100;
    const refused = await eventually(async () => {
      const err = await appendAsync(store, [ev(++n)]);
      if (!err) accepted.push(n);
      return err ?? undefined;
    });
    assert.ok(refused instanceof StoreUnavailableError);
    assert.match(refused.message, /audit database cannot be written \(.*readonly.*\); refusing until it can/i);
    assert.throws(() => store.append(ev(99)), StoreUnavailableError);
    store.writerPragma('query_only = OFF');
    await eventually(async () => (await appendAsync(store, [ev(3)])) === null);
    store.close();
    const again = AuditStore.open(dir);
    assert.deepEqual(
      again.events().map((e) => (e.payload as { n: number }).n),
      [1, 2, ...accepted, 3],
      'journaled events reached the log once the database could be written; refused ones did not',
    );
    again.close();
    assert.equal(verifyStore(dir).ok, true);
  });

  it('refuses appends it cannot journal (a full disk), writing nothing', async () => {
    const dir = tempDir();
    const store = AuditStore.open(dir, { commitThread: true });
    assert.equal(await appendAsync(store, [ev(1)]), null);
    store.redirectJournal('/dev/full');
    const err = await appendAsync(store, [ev(2)]);
    assert.ok(err instanceof StoreUnavailableError);
    assert.match(err.message, /ENOSPC/);
    store.close();
    const again = AuditStore.open(dir);
    assert.equal(again.head().size, 1);
    again.close();
  });

  it('fails closed when the thread dies', async () => {
    const dir = tempDir();
    const store = AuditStore.open(dir, { commitThread: true });
    assert.equal(await appendAsync(store, [ev(1)]), null);
    const worker = (store as unknown as { thread: { worker: Worker } }).thread.worker;
    await worker.terminate();
    await new Promise((r) => setImmediate(r));
    const err = await appendAsync(store, [ev(2)]);
    assert.ok(err instanceof StoreUnavailableError);
    assert.match(err.message, /commit thread exited/);
    assert.throws(() => store.append(ev(2)), /commit thread exited/);
    store.close();
    // The first event may have been journaled but not committed when the thread died: the next
    // start folds it in; the refused one is nowhere.
    const again = AuditStore.open(dir);
    assert.deepEqual(again.events().map((e) => (e.payload as { n: number }).n), [1]);
    again.close();
    assert.equal(verifyStore(dir).ok, true);
  });

  it('keeps every acknowledged event through a crash (SIGKILL), and folds it at the next start', async () => {
    const dir = tempDir();
    const child = gatewayProcess(
      dir,
      `let n = 0;
      const next = () => {
        const batch = [];
        for (let i = 0; i < 5; i++) batch.push({ kind: 'http.request', session: 'ses_c', payload: { n: ++n } });
        const last = n;
        store.appendAsync(batch, (err) => {
          if (err) throw err;
          process.stdout.write('ack ' + last + '\\n');
          setImmediate(next);
        });
      };
      next();`,
      'pipe',
    );
    // Listened for from the start: the exit can be reported before a later listener is attached.
    const exited = new Promise((r) => child.once('exit', r));
    let acked = 0;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${acked} events acknowledged in 30 s`)), 30_000);
      let killed = false;
      void exited.then((code) => killed || reject(new Error(`the writer exited (${String(code)}) before it was killed`)));
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (killed) return;
        acked = Number(line.split(' ')[1]);
        if (acked >= 2000) {
          killed = true;
          child.kill('SIGKILL');
          clearTimeout(timer);
          resolve();
        }
      });
    });
    await exited;
    const store = AuditStore.open(dir);
    const ns = store.events(1, 1_000_000).map((e) => (e.payload as { n: number }).n);
    store.close();
    assert.ok(ns.length >= acked, `${ns.length} events in the log, ${acked} acknowledged`);
    assert.deepEqual(ns.slice(0, acked), Array.from({ length: acked }, (_, i) => i + 1), 'every acknowledged event, in order');
    const report = verifyStore(dir);
    assert.equal(report.ok, true, JSON.stringify(report.failure));
  });

  it('writes what was sent before close', async () => {
    const dir = tempDir();
    const store = AuditStore.open(dir, { commitThread: true });
    const acks = [appendAsync(store, [ev(1)]), appendAsync(store, [ev(2), ev(3, 'ses_b')])];
    store.close();
    assert.deepEqual(await Promise.all(acks), [null, null]);
    const again = AuditStore.open(dir);
    assert.equal(again.head().size, 3);
    assert.equal(again.session('ses_b')?.events, 1, 'the session index was written at close');
    again.close();
  });
});

describe('audit journal lines', () => {
  it('round-trip payloads with tabs, newlines and non-ASCII text, and keep the chain place they were given', async () => {
    const dir = tempDir();
    const store = AuditStore.open(dir, { commitThread: true });
    const tricky = { text: 'a\tb\nc "quoted" \\ back — ünïcode 👋', nested: { tab: '\t' } };
    assert.equal(await appendAsync(store, [{ kind: 'http.request', session: 's', payload: tricky, spans: [{ type: 'EMAIL', start: 0, end: 1, rule: 'r' }] }]), null);
    store.close();
    const again = AuditStore.open(dir);
    const [e] = again.events();
    assert.deepEqual(e!.payload, tricky);
    assert.equal(e!.spans.length, 1);
    again.close();
    assert.equal(verifyStore(dir).ok, true);
  });

  it('deletes journal files while running once everything in them is in the database', async () => {
    const dir = tempDir();
    const store = AuditStore.open(dir, { commitThread: true });
    const files = () => readdirSync(`${dir}/custody.db.journal`).filter((f) => f.endsWith('.jsonl'));
    const big = 'x'.repeat(2000);
    const seen = new Set<string>();
    // ~12 MB of lines: the journal rotates at 8 MiB.
    for (let round = 0; round < 12; round++) {
      assert.equal(await appendAsync(store, Array.from({ length: 500 }, (_, i) => ({ kind: 'http.request' as const, session: 's', payload: { i, big } }))), null);
      for (const f of files()) seen.add(f);
    }
    assert.ok(seen.size >= 2, 'the journal rotated');
    const first = [...seen].sort()[0]!;
    await eventually(async () => !files().includes(first));
    assert.equal(store.head().size, 6000);
    store.close();
    assert.deepEqual(files(), [], 'nothing left after a clean close');
    assert.equal(verifyStore(dir).events, 6000);
  });

  it('skips a torn last line at the next start: its batch was never acknowledged', async () => {
    const dir = tempDir();
    // A gateway that journals two batches and dies before its commit thread folds them.
    const child = gatewayProcess(
      dir,
      `store.appendAsync([{ kind: 'http.request', session: 's', payload: { n: 1 } }], () => {
        store.appendAsync([{ kind: 'http.request', session: 's', payload: { n: 2 } }], () => process.kill(process.pid, 'SIGKILL'));
      });`,
    );
    await new Promise((r) => child.once('exit', r));
    const file = journalFile(dir);
    const text = readFileSync(file, 'utf8');
    assert.equal(text.split('\n').length, 3, 'two journaled lines');
    // Tear the second line in the middle of its payload, as a crash inside the write would.
    writeFileSync(file, text.slice(0, text.indexOf('\n') + 1 + 20));
    const store = AuditStore.open(dir);
    assert.deepEqual(store.events().map((e) => e.payload), [{ n: 1 }]);
    store.close();
    assert.equal(verifyStore(dir).ok, true);
  });

  it('refuses to open over a damaged whole line, naming the file, the line and the salvage command (it may hold recorded events)', async () => {
    const dir = tempDir();
    const child = gatewayProcess(
      dir,
      `store.appendAsync([{ kind: 'http.request', session: 's', payload: { n: 1 } }, { kind: 'http.request', session: 's', payload: { n: 2 } }], () => process.kill(process.pid, 'SIGKILL'));`,
    );
    await new Promise((r) => child.once('exit', r));
    const file = journalFile(dir);
    const lines = readFileSync(file, 'utf8').split('\n');
    lines[0] = lines[0]!.replace('\t', ' ');
    writeFileSync(file, lines.join('\n'));
    assert.throws(() => AuditStore.open(dir), (err: Error) => err instanceof StoreUnavailableError && /journal file .*0+1\.jsonl line 1 cannot be read.*custody journal salvage --data-dir/.test(err.message));
    assert.ok(existsSync(file), 'the journal is kept');
  });
});

/**
 * Evidence bundles exported in a group (docs/SCALE-OUT.md, "The log's shape"; docs/AUDIT.md,
 * "Evidence export"): three `custody serve` processes, A, B and C, on one real PostgreSQL store,
 * with traffic through each and a request held on A and approved on B (so B's vote cites A's
 * `hold.created` and A's resolution cites B's vote).
 *
 * - A bundle exported from B over REST (what the console's export does) carries every chain as the
 *   store holds it, each chain's checkpoints, the combined checkpoints and the gateway rows, and
 *   `custody verify BUNDLE --keys` passes, as `custody verify --store` does on the store. Its
 *   report.html, ocsf.jsonl and holds.json cover every chain: the report names every gateway and
 *   lists a session recorded on C, ocsf.jsonl holds one record per exported event of each chain,
 *   each naming its chain, and holds.json holds A's hold once, with B's vote.
 * - Tampered with, it fails naming the chain, the seq and the check, even when B (whose key signs
 *   the bundle's manifest) signs the tampered manifest again: an event of A's chain edited, the
 *   tail of C's chain deleted, C's chain dropped, a combined checkpoint's signature replaced, a
 *   chain signed by a key nobody approved added.
 * - Its ocsf.jsonl and holds.json are held to its events: an OCSF record edited, added for an event
 *   the bundle does not export, or removed, and a hold's vote removed, state flipped or gateway
 *   changed, each under a manifest B signs again, fail as `derived-mismatch`, naming the line or
 *   hold, the chain and the seq.
 * - The group log's witness cosignatures travel in the bundle: a bundle cut while no witness was
 *   configured fails `--witness-key` (`unwitnessed`); with a witness added (A, B and C restarted
 *   with it), one exported from B, and a filtered one, pass it; the cosignature file removed, a
 *   cosignature's signature altered, the cosignatures made under another key and the newest
 *   combined checkpoints dropped each fail, naming what.
 * - `custody export` (the CLI, on C's config, C stopped) cuts a filtered one that verifies too.
 * - A tail deleted in the store is reported by `verify --store` and by a bundle exported after it,
 *   with the same problem, chain and seq.
 * - A bundle from before group bundles existed (test/fixtures/bundles, exported by the code of
 *   commit eb015f6) still verifies (its ocsf.jsonl and holds.json held to the manifest only), and a
 *   gateway without a store still exports that format (no gateway in its OCSF records or holds, no
 *   per-gateway part in its report), its OCSF records held to its events: one edited fails.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import type { HealthResponse } from '../../shared/api';
import { Config } from '../../shared/config';
import type { HoldView } from '../../shared/holds';
import { BUNDLE_FILES, type BundleManifest, GROUP_BUNDLE_FILES, manifestNoteText } from '../../proxy/audit/bundle-format';
import { canonicalEventBody, chainHashOfText, GENESIS_HASH, sha256hex } from '../../proxy/audit/chain';
import { openAuditTrail } from '../../proxy/audit/checkpoints';
import { ocsfJson } from '../../proxy/audit/ocsf';
import { keyFingerprint } from '../../proxy/audit/checkpoint-signer';
import { eventLeafHash, HASH_SIZE } from '../../proxy/audit/merkle';
import { enrolmentRequestText } from '../../proxy/audit/shared-store/enrolment';
import { cosign, formatCosignerKey, parseCosignerKey } from '../../proxy/audit/cosignature';
import { parseCombinedText } from '../../proxy/audit/shared-store/combined-checkpoint';
import { assembleNote, ed25519RawPublicKey, formatCheckpointText, keyIdHex, loadEd25519PrivateKey, parseNote, signNote } from '../../proxy/audit/signed-note';
import { AuditStore } from '../../proxy/audit/store';
import { readTar, writeTarGz } from '../../proxy/audit/tar';
import { type CustodyServe, custodyAsync as custody, startServe, writeConfig } from '../support/custody-process';
import { type EchoUpstream, startEchoUpstream } from '../support/echo-upstream';
import { exportOverRest } from '../support/exports';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { storedChain } from '../support/shared-store-chains';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';
import { type RunningWitness, startWitness } from '../support/witness-process';

const root = tempDir('custody-scale-bundles-');
let echo: EchoUpstream;
let db: TestDatabase;
let sql: pg.Client;
const serving: CustodyServe[] = [];

interface Member {
  name: string;
  dir: string;
  file: string;
  gw?: CustodyServe;
  id?: string;
}
const members: Member[] = [];
/** The group log's witness: its key is made first; the gateways are given it (and restarted) only in the witness test. */
const WITNESS = 'witness.test/w1';
let witnessKey = '';
let witness: RunningWitness | undefined;
const keys: { admin?: string; requester?: string; carol?: string } = {};
let keysFile = '';

async function cli(m: Member, ...args: string[]): Promise<string> {
  const r = await custody(...args, '--config', m.file);
  assert.equal(r.status, 0, `custody ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
}

/** A member's configuration; `witnessUrl`: with the group's witness in audit.witnesses[]. */
function configOf(dir: string, witnessUrl?: string): unknown {
  return {
    dataDir: dir,
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    connections: [{ name: 'echo', kind: 'http', upstream: echo.url }],
    policies: [{ name: 'sign-off', match: { paths: ['/held/*'] }, action: 'hold', hold: { approvers: ['ops'], min: 1, timeout: '2m' } }],
    store: { url: db.url },
    audit: { groupCheckpointInterval: '1s', ...(witnessUrl ? { witnesses: [{ name: 'w1', url: witnessUrl, key: witnessKey }] } : {}) },
  };
}

function setUp(name: string): Member {
  const dir = join(root, name);
  mkdirSync(dir);
  const file = writeConfig(dir, configOf(dir));
  const m: Member = { name, dir, file };
  members.push(m);
  return m;
}

const send = (m: Member, path: string) => fetch(`http://${m.gw!.http}/echo/${path}`, { headers: { authorization: `Bearer ${keys.requester}` } });

async function api<T>(m: Member, key: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(`http://${m.gw!.control}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
}

/** Waits until every chain is shipped and the newest combined checkpoint commits to all of it. */
async function settled(running: Member[]): Promise<void> {
  for (const m of running) await until(`${m.name} shipped`, async () => (await api<HealthResponse>(m, keys.admin!, '/api/health')).body.sharedStore?.lagEvents === 0, 15_000);
  const shipped = new Map((await sql.query<{ id: string; shipped_seq: string }>('SELECT id, shipped_seq FROM custody_gateways')).rows.map((r) => [r.id, Number(r.shipped_seq)]));
  await until(
    'a combined checkpoint over every shipped row',
    async () => {
      const note = (await sql.query<{ note: string }>('SELECT note FROM custody_combined_checkpoints ORDER BY interval_start DESC LIMIT 1')).rows[0]?.note;
      if (!note) return false;
      const heads = parseCombinedText(parseNote(note).text).heads;
      return [...shipped].every(([id, seq]) => (heads.find((h) => h.gateway === id)?.size ?? 0) >= seq);
    },
    15_000,
  );
}

/** An export over REST (the console's), downloaded to `out`. */
const exportVia = (m: Member, out: string, filter: Record<string, unknown> = {}) => exportOverRest(`http://${m.gw!.control}`, keys.admin!, out, filter);

const verify = (...args: string[]) => custody('verify', ...args);
const failures = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('custody verify: FAILED'));

/** The bundle's files, changed by `change`, written as a new bundle; the manifest signed again with B's key (or the key in `signerDir`) when `resign`. */
async function tampered(src: string, name: string, change: (files: Map<string, Buffer>, manifest: BundleManifest) => void, resign = true, signerDir?: string): Promise<string> {
  const files = readTar(readFileSync(src));
  const manifest = JSON.parse(files.get('manifest.json')!.toString('utf8')) as BundleManifest;
  change(files, manifest);
  if (resign) {
    const keyDir = signerDir ?? members.find((m) => m.name === 'b')!.dir;
    for (const file of Object.keys(manifest.files)) {
      const data = files.get(file);
      if (data) manifest.files[file] = { sha256: sha256hex(data), bytes: data.length };
    }
    const text = `${JSON.stringify(manifest, null, 2)}\n`;
    files.set('manifest.json', Buffer.from(text));
    const key = loadEd25519PrivateKey(readFileSync(join(keyDir, 'checkpoint-signing.key')));
    files.set('manifest.note', Buffer.from(signNote(manifestNoteText(sha256hex(text)), manifest.origin, key)));
  }
  const out = join(root, name);
  await writeTarGz(out, [...files].map(([file, data]) => ({ name: file, data, size: data.length })));
  return out;
}

/** The lines of group-events.jsonl, parsed. */
function groupEvents(files: Map<string, Buffer>): (Record<string, unknown> & { gateway: string; seq: number; kind: string; payload: Record<string, unknown> })[] {
  return files
    .get('group-events.jsonl')!
    .toString('utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown> & { gateway: string; seq: number; kind: string; payload: Record<string, unknown> });
}
const setEvents = (files: Map<string, Buffer>, events: unknown[]) => files.set('group-events.jsonl', Buffer.from(events.map((e) => `${JSON.stringify(e)}\n`).join('')));

/** Each chain's hashes in group-hashes.bin, by gateway. */
function groupHashes(files: Map<string, Buffer>, manifest: BundleManifest): Map<string, string[]> {
  const all = files.get('group-hashes.bin')!;
  const out = new Map<string, string[]>();
  let at = 0;
  for (const c of manifest.group!.chains) {
    const list: string[] = [];
    for (let i = 0; i < c.size; i++, at += HASH_SIZE) list.push(all.toString('hex', at, at + HASH_SIZE));
    out.set(c.gateway, list);
  }
  return out;
}
const setHashes = (files: Map<string, Buffer>, manifest: BundleManifest, hashes: Map<string, string[]>) => files.set('group-hashes.bin', Buffer.concat(manifest.group!.chains.map((c) => Buffer.from(hashes.get(c.gateway)!.join(''), 'hex'))));

/** The lines of ocsf.jsonl, parsed. */
type OcsfRecord = { metadata: { uid: string; log_name: string }; unmapped: { custody: { seq: number; kind: string; hash: string; gateway?: string; gateway_name?: string } } } & Record<string, unknown>;
function ocsfRecords(files: Map<string, Buffer>): OcsfRecord[] {
  return files
    .get('ocsf.jsonl')!
    .toString('utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as OcsfRecord);
}
const setOcsf = (files: Map<string, Buffer>, records: unknown[]) => files.set('ocsf.jsonl', Buffer.from(records.map((r) => `${JSON.stringify(r)}\n`).join('')));
/** The line (1-based) of ocsf.jsonl holding the record of `gateway`'s event `seq`. */
const ocsfLine = (files: Map<string, Buffer>, gateway: string, seq: number) => ocsfRecords(files).findIndex((r) => r.unmapped.custody.gateway === gateway && r.unmapped.custody.seq === seq) + 1;
/** ocsf.jsonl's records counted by the chain each names. */
function ocsfByChain(files: Map<string, Buffer>): Map<string | undefined, number> {
  const out = new Map<string | undefined, number>();
  for (const r of ocsfRecords(files)) out.set(r.unmapped.custody.gateway, (out.get(r.unmapped.custody.gateway) ?? 0) + 1);
  return out;
}
/** The rows (`<tr>…</tr>`) of report.html that contain `text`. */
const reportRows = (html: string, text: string) => (html.match(/<tr>.*?<\/tr>/gs) ?? []).filter((row) => row.includes(text));

let a: Member;
let b: Member;
let c: Member;
let bundle = '';
let heldId = '';

before(async () => {
  echo = await startEchoUpstream();
  db = await createTestDatabase('custody_test_scale_bundles');
  sql = await db.client();
  [a, b, c] = [setUp('a'), setUp('b'), setUp('c')];
  // Made on A before it starts: persons and keys are the group's, so they reach B and C.
  await cli(a, 'persons', 'create', 'Carol', '--id', 'person_carol');
  keys.carol = await cli(a, 'keys', 'create', '--name', 'carol', '--owner', 'person_carol', '--groups', 'ops');
  keys.requester = await cli(a, 'keys', 'create', '--name', 'requester', '--groups', 'dev');
  keys.admin = await cli(a, 'keys', 'create', '--name', 'auditor', '--groups', 'admin');
  a.gw = await startServe(a.file);
  serving.push(a.gw);
  a.id = await until('A enrolled', async () => (await sql.query<{ id: string }>("SELECT id FROM custody_gateways WHERE status = 'enrolled'").catch(() => undefined))?.rows[0]?.id);
  for (const m of [b, c]) {
    m.gw = await startServe(m.file);
    serving.push(m.gw);
    m.id = await until(`${m.name} pending`, async () => (await sql.query<{ id: string }>("SELECT id FROM custody_gateways WHERE status = 'pending'")).rows[0]?.id);
    await cli(a, 'gateways', 'approve', m.id);
    await until(`${m.name} serving`, async () => (await send(m, 'joined')).status === 200, 15_000);
  }
  keysFile = join(root, 'pinned-keys.txt');
  writeFileSync(keysFile, `# the group's first gateway\n${a.id}\n`);
});

after(async () => {
  for (const gw of serving.splice(0)) await gw.kill();
  // The witness is killed by its helper when the file ends (witness-process.ts).
  await echo?.close();
  await db?.drop();
});

describe('evidence bundles exported in a group', () => {
  it('carry every chain, the combined checkpoints and the gateway rows, and verify as the store does', async () => {
    for (const m of [a, b, c]) for (let i = 0; i < 3; i++) assert.equal((await send(m, `plain/${m.name}-${i}`)).status, 200);
    // Held on A, approved on B.
    const held = send(a, 'held/transfer');
    held.catch(() => {});
    const hold = await until('the hold on B', async () => (await api<{ holds: HoldView[] }>(b, keys.carol!, '/api/holds?state=pending')).body.holds.find((h) => h.summary.includes('held/transfer')), 10_000);
    heldId = hold.id;
    const decided = await api<HoldView>(b, keys.carol!, `/api/holds/${hold.id}/decision`, { decision: 'approve', reason: 'ticket 7' });
    assert.equal(decided.status, 200, JSON.stringify(decided.body));
    assert.equal((await held).status, 200, 'the held request was released on A');
    // The hold's row in the store, as A wrote it once resolved (with B's vote): written by A's hold worker, not shipped with the chain.
    await until('A wrote the resolved hold to the store', async () => (await sql.query<{ state: string }>('SELECT state FROM custody_holds WHERE id = $1', [heldId])).rows[0]?.state === 'approved', 10_000);
    await settled([a, b, c]);

    bundle = join(root, 'from-b.tar.gz');
    await exportVia(b, bundle);
    const files = readTar(readFileSync(bundle));
    const manifest = JSON.parse(files.get('manifest.json')!.toString('utf8')) as BundleManifest;
    for (const name of [...BUNDLE_FILES, ...GROUP_BUNDLE_FILES]) assert.ok(files.has(name), `the bundle has ${name}`);
    const group = manifest.group!;
    assert.equal(group.full, true);
    assert.deepEqual(group.chains.map((x) => x.gateway).sort(), [a.id, b.id, c.id].sort(), 'every chain of the store');

    // Each chain as the store holds it: its hashes 1..size and, unfiltered, every row.
    const hashes = groupHashes(files, manifest);
    const events = groupEvents(files);
    for (const m of [a, b, c]) {
      const entry = group.chains.find((x) => x.gateway === m.id)!;
      const stored = await storedChain(sql, m.id!);
      assert.ok(entry.size > 0 && entry.size <= stored.length, `${m.name}: cut at ${entry.size} of ${stored.length} shipped rows`);
      assert.deepEqual(hashes.get(m.id!), stored.slice(0, entry.size).map((r) => r.hash), `${m.name}: the hashes are the store's`);
      assert.deepEqual(
        events.filter((e) => e.gateway === m.id).map((e) => [e.seq, e.hash]),
        stored.slice(0, entry.size).map((r) => [r.seq, r.hash]),
        `${m.name}: every row, as the store holds it`,
      );
    }
    // The cross-references are there to check: B's vote cites A's hold.created, A's resolution cites B's vote.
    const created = events.find((e) => e.gateway === a.id && e.kind === 'hold.created' && e.payload['id'] === heldId)!;
    const vote = events.find((e) => e.gateway === b.id && e.kind === 'hold.vote' && e.payload['id'] === heldId)!;
    const resolved = events.find((e) => e.gateway === a.id && e.kind === 'hold.resolved' && e.payload['id'] === heldId)!;
    assert.deepEqual(vote.payload['refs'], [{ gateway: a.id, seq: created.seq, hash: created['hash'] }]);
    assert.deepEqual(resolved.payload['refs'], [{ gateway: b.id, seq: vote.seq, hash: vote['hash'] }]);
    assert.ok(events.some((e) => e.gateway === a.id && e.kind === 'gateway.approved' && e.payload['id'] === b.id), "A's approval of B");
    const gateways = JSON.parse(files.get('group-gateways.json')!.toString('utf8')) as { id: string; request: string }[];
    assert.deepEqual(gateways.map((g) => g.id).sort(), [a.id, b.id, c.id].sort());
    const combined = files.get('group-combined.jsonl')!.toString('utf8').split('\n').filter(Boolean);
    const storedCombined = Number((await sql.query<{ n: string }>('SELECT count(*) AS n FROM custody_combined_checkpoints')).rows[0]!.n);
    assert.equal(group.combined, combined.length);
    assert.ok(combined.length > 0 && combined.length <= storedCombined, `${combined.length} of the store's ${storedCombined} combined checkpoints`);

    const r = await verify(bundle, '--keys', keysFile);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^OK: bundle .* is intact/m, "B's own chain, as before");
    assert.match(r.stdout, /^OK: the group's chains in .* are intact: 3 chains, [\d,]+ events/m);
    assert.match(r.stdout, /^ocsf\.jsonl: [\d,]+ records, each mapped again from its event; every exported event mapped has its record$/m);
    assert.match(r.stdout, /^holds\.json: 1 hold, each as its hold\.created, hold\.vote and hold\.resolved events in the bundle say$/m);
    assert.match(r.stdout, new RegExp(`^  ${escape(a.id!)} .*pinned key$`, 'm'));
    assert.match(r.stdout, new RegExp(`^  ${escape(b.id!)} .*approved at seq \\d+ of ${escape(a.id!)}$`, 'm'));
    // The newest may have been made a moment before the export and not be cosigned yet (and the
    // first ones, made before B and C joined, had nobody to cosign): cosignatures are there.
    const cosigned = /^combined checkpoints: [\d,]+ verified with ([\d,]+) cosignatures; .* cosigned by [0-2]$/m.exec(r.stdout);
    assert.ok(cosigned && Number(cosigned[1]!.replace(/,/g, '')) > 0, r.stdout);
    // The same store, verified where it is.
    const store = await verify('--store', db.url, '--keys', keysFile);
    assert.equal(store.status, 0, store.stderr);
    // Without --keys the first enrolled gateway is trusted on first use, and the output says so.
    const tofu = await verify(bundle);
    assert.equal(tofu.status, 0, tofu.stderr);
    assert.match(tofu.stdout, /note: no --keys given: the first enrolled gateway was trusted on first use/);

    // The report, the OCSF records and the holds cover every chain, each naming its gateway.
    const own = files.get('events.jsonl')!.toString('utf8').split('\n').filter(Boolean).length;
    const perChain = ocsfByChain(files);
    assert.equal(perChain.get(undefined), undefined, 'every OCSF record names its chain');
    assert.deepEqual(
      [a, b, c].map((m) => [m.name, perChain.get(m.id) ?? 0]),
      [a, b, c].map((m) => [m.name, m === b ? own : group.chains.find((x) => x.gateway === m.id)!.events]),
      "one OCSF record per exported event of each chain: B's events.jsonl, A's and C's rows in group-events.jsonl",
    );
    assert.equal(own, manifest.events);
    // A record of another chain is that chain's event: its seq, kind and hash.
    const createdRecord = ocsfRecords(files).find((r) => r.unmapped.custody.gateway === a.id && r.unmapped.custody.seq === created.seq)!;
    assert.ok(createdRecord, "A's hold.created has its OCSF record");
    assert.equal(createdRecord.unmapped.custody.kind, 'hold.created');
    assert.equal(createdRecord.unmapped.custody.hash, created['hash']);
    assert.equal(createdRecord.unmapped.custody.gateway_name, hostname());
    assert.equal(new Set(ocsfRecords(files).map((r) => r.metadata.uid)).size, ocsfRecords(files).length, 'no two OCSF records share a uid');

    const holdRows = (JSON.parse(files.get('holds.json')!.toString('utf8')) as (HoldView & { gatewayName?: string })[]).filter((h) => h.id === heldId);
    assert.equal(holdRows.length, 1, "A's hold appears once in holds.json");
    assert.equal(holdRows[0]!.gateway, a.id, 'it names its gateway, A');
    assert.equal(holdRows[0]!.state, 'approved');
    assert.deepEqual(
      holdRows[0]!.votes.map((v) => [v.gateway, v.decision, v.reason]),
      [[b.id, 'approve', 'ticket 7']],
      "with B's vote",
    );

    const html = files.get('report.html')!.toString('utf8');
    for (const m of [a, b, c]) {
      // Each chain's head: B's own at the bundle's checkpoint, the others' where the bundle cuts them.
      const head = m === b ? manifest.checkpoint.treeSize : group.chains.find((x) => x.gateway === m.id)!.size;
      const rows = reportRows(html, m.id!).filter((row) => row.includes(`seq ${head.toLocaleString('en-US')}<br>`));
      assert.equal(rows.length, 1, `the report's per-gateway summary names ${m.name} (${m.id}) with its head at seq ${head}`);
    }
    const cSession = events.find((e) => e.gateway === c.id && e.kind === 'http.request' && typeof e['session'] === 'string')!;
    assert.ok(cSession, 'a session recorded on C');
    const sessionRows = reportRows(html, cSession['session'] as string);
    assert.ok(sessionRows.some((row) => row.includes(c.id!)), `the report lists C's session ${String(cSession['session'])}, marked with C`);
    assert.ok(reportRows(html, heldId).some((row) => row.includes(a.id!)), "the report's hold outcomes list A's hold, marked with A");
    // Every file is in the signed manifest: an OCSF record changed afterwards is named.
    for (const name of ['report.html', 'ocsf.jsonl', 'holds.json']) assert.ok(manifest.files[name], `${name} is in the manifest`);
    const ocsfEdited = await verify(
      await tampered(bundle, 'ocsf-edited.tar.gz', (f) => f.set('ocsf.jsonl', Buffer.from(f.get('ocsf.jsonl')!.toString('utf8').replace(String(created['hash']), '0'.repeat(64)))), false),
      '--keys',
      keysFile,
    );
    assert.equal(ocsfEdited.status, 1);
    assert.match(ocsfEdited.stderr, /ocsf\.jsonl was changed after export/);
  });

  it('fails naming the chain, the seq and the check when any chain is tampered with, even under a manifest signed again', async () => {
    assert.ok(bundle, 'the bundle of the test before');
    const base = readTar(readFileSync(bundle));
    const manifest = JSON.parse(base.get('manifest.json')!.toString('utf8')) as BundleManifest;
    const created = groupEvents(base).find((e) => e.gateway === a.id && e.kind === 'hold.created' && e.payload['id'] === heldId)!;

    // An event of A's chain edited. Without a new manifest signature the manifest names the file too.
    const edit = (files: Map<string, Buffer>) =>
      setEvents(
        files,
        groupEvents(files).map((e) => (e.gateway !== a.id || e.seq !== created.seq ? e : { ...e, payload: { ...e.payload, summary: 'GET /echo/held/nothing-to-see' } })),
      );
    const edited = await verify(await tampered(bundle, 'edited.tar.gz', edit, false), '--keys', keysFile);
    assert.equal(edited.status, 1);
    assert.ok(failures(edited.stderr).includes(`custody verify: FAILED: modified — chain ${a.id} at seq ${created.seq}: its payload (hold.created) no longer matches its payload hash`), edited.stderr);
    assert.match(edited.stderr, /bundle-modified — group-events\.jsonl was changed after export/);
    // Signed again by B, only the chain checks can tell, and they do: first the row, then what no longer
    // holds once A's chain fails (its approvals of B and C, their signatures, and A's tail), as verify --store says.
    const editedSigned = await verify(await tampered(bundle, 'edited-signed.tar.gz', edit), '--keys', keysFile);
    assert.equal(editedSigned.status, 1);
    const found = failures(editedSigned.stderr);
    assert.equal(found[0], `custody verify: FAILED: modified — chain ${a.id} at seq ${created.seq}: its payload (hold.created) no longer matches its payload hash`, editedSigned.stderr);
    assert.ok(!found.some((l) => /bundle-modified/.test(l)), 'the manifest checks out');
    const approvedAt = (id: string) => groupEvents(base).find((e) => e.gateway === a.id && e.kind === 'gateway.approved' && e.payload['id'] === id)!.seq;
    for (const m of [b, c]) assert.ok(found.includes(`custody verify: FAILED: unapproved-signer — chain ${m.id} (${hostname()}) is signed by a key the verifier does not trust: approved at seq ${approvedAt(m.id!)} of ${a.id}, a chain that fails verification`), editedSigned.stderr);

    // The tail of C's chain deleted: its last three rows and their hashes, and the manifest's count.
    const cSize = manifest.group!.chains.find((x) => x.gateway === c.id)!.size;
    const cut = await verify(
      await tampered(bundle, 'c-tail.tar.gz', (files, m) => {
        setEvents(files, groupEvents(files).filter((e) => e.gateway !== c.id || e.seq <= cSize - 3));
        setOcsf(files, ocsfRecords(files).filter((r) => r.unmapped.custody.gateway !== c.id || r.unmapped.custody.seq <= cSize - 3));
        const h = groupHashes(files, m);
        h.set(c.id!, h.get(c.id!)!.slice(0, cSize - 3));
        const entry = m.group!.chains.find((x) => x.gateway === c.id)!;
        entry.size -= 3;
        entry.events -= 3;
        setHashes(files, m, h);
      }),
      '--keys',
      keysFile,
    );
    assert.equal(cut.status, 1);
    assert.ok(failures(cut.stderr).length > 0);
    for (const line of failures(cut.stderr)) assert.match(line, new RegExp(`^custody verify: FAILED: truncated — chain ${escape(c.id!)} at seq ${cSize - 2}: .*(deleted from the tail|were deleted)`), cut.stderr);

    // C's chain dropped: its gateway row, rows, hashes, checkpoints and manifest entry.
    const dropped = await verify(
      await tampered(bundle, 'c-dropped.tar.gz', (files, m) => {
        const h = groupHashes(files, m);
        m.group!.chains = m.group!.chains.filter((x) => x.gateway !== c.id);
        setHashes(files, m, h);
        setEvents(files, groupEvents(files).filter((e) => e.gateway !== c.id));
        const rows = JSON.parse(files.get('group-gateways.json')!.toString('utf8')) as { id: string }[];
        files.set('group-gateways.json', Buffer.from(JSON.stringify(rows.filter((g) => g.id !== c.id))));
        const cps = files.get('group-checkpoints.jsonl')!.toString('utf8').split('\n').filter((l) => l && (JSON.parse(l) as { gateway: string }).gateway !== c.id);
        files.set('group-checkpoints.jsonl', Buffer.from(cps.map((l) => `${l}\n`).join('')));
      }),
      '--keys',
      keysFile,
    );
    assert.equal(dropped.status, 1);
    // The combined checkpoints that list C (or that C made) still name it.
    const unknown = failures(dropped.stderr).filter((l) => l.includes('unknown-chain'));
    assert.ok(unknown.length > 0, dropped.stderr);
    for (const l of unknown) assert.match(l, new RegExp(`the combined checkpoint of \\S+ \\(made by (\\S+, cosigned by \\d\\) lists chain ${escape(c.id!)}, which the bundle has no gateway row for|${escape(c.id!)}\\): its maker has no gateway row)`));

    // The newest combined checkpoint's signature replaced by another key's over the same text.
    let maker = '';
    const forgedSig = await verify(
      await tampered(bundle, 'combined-sig.tar.gz', (files) => {
        const lines = files.get('group-combined.jsonl')!.toString('utf8').split('\n').filter(Boolean);
        const newest = JSON.parse(lines[lines.length - 1]!) as { maker: string; note: string };
        maker = newest.maker;
        const parsed = parseNote(newest.note);
        const other = generateKeyPairSync('ed25519').privateKey;
        const sig = parseNote(signNote(parsed.text, parsed.signatures[0]!.name, other)).signatures[0]!.signature;
        newest.note = assembleNote(parsed.text, parsed.signatures[0]!.name, parsed.signatures[0]!.keyId, sig);
        lines[lines.length - 1] = JSON.stringify(newest);
        files.set('group-combined.jsonl', Buffer.from(lines.map((l) => `${l}\n`).join('')));
      }),
      '--keys',
      keysFile,
    );
    assert.equal(forgedSig.status, 1);
    assert.deepEqual(
      failures(forgedSig.stderr).map((l) => l.replace(/of \S+ \(made by/, 'of T (made by')),
      [`custody verify: FAILED: signature-invalid — the combined checkpoint of T (made by ${maker}): it is not signed by its maker's key (bad-signature)`],
      forgedSig.stderr,
    );

    // A chain signed by a key no trusted gateway approved, with a gateway row and enrolment request of its own.
    const { privateKey } = generateKeyPairSync('ed25519');
    const raw = ed25519RawPublicKey(privateKey);
    const mallory = keyFingerprint(raw);
    const forged = await verify(
      await tampered(bundle, 'forged-signer.tar.gz', (files, m) => {
        const payloadText = '{"note":"forged"}';
        const payloadHash = sha256hex(`{"payload":${payloadText},"spans":[]}`);
        const time = Date.now();
        const hash = chainHashOfText(GENESIS_HASH, canonicalEventBody({ seq: 1, time, kind: 'gateway.start' as never, session: null, actor: 'system', connection: null, payloadHash }));
        setEvents(files, [...groupEvents(files), { gateway: mallory, seq: 1, time, kind: 'gateway.start', session: null, actor: 'system', connection: null, payload: { note: 'forged' }, spans: [], payloadHash, prevHash: GENESIS_HASH, hash }]);
        // Its OCSF record too, as the exporter's mapper writes it (else ocsf.jsonl gives the forgery away first).
        const ctx = { connectionKinds: new Map(Object.entries(m.ocsf!.connectionKinds)), actorNames: new Map<string, string>(), product: m.ocsf!.product, origin: mallory, gateway: { id: mallory, name: 'mallory' } };
        setOcsf(files, [...ocsfRecords(files), JSON.parse(ocsfJson({ seq: 1, time, kind: 'gateway.start', session: null, actor: 'system', connection: null, payload: { note: 'forged' }, masked: 0, hash }, ctx)) as unknown]);
        const h = groupHashes(files, m);
        h.set(mallory, [hash]);
        m.group!.chains.push({ gateway: mallory, name: 'mallory', size: 1, events: 1 });
        setHashes(files, m, h);
        const rows = JSON.parse(files.get('group-gateways.json')!.toString('utf8')) as unknown[];
        rows.push({ id: mallory, publicKey: raw.toString('base64'), keyName: 'mallory', name: 'mallory', status: 'approved', request: signNote(enrolmentRequestText(mallory, 'mallory', time), 'mallory', privateKey), requestedAt: time, approvedBy: a.id, approvalSeq: 1, removedBy: null, removalSeq: null, shippedSeq: 1, lastSeen: time });
        files.set('group-gateways.json', Buffer.from(JSON.stringify(rows)));
        const root1 = eventLeafHash(Buffer.from(hash, 'hex'));
        const note = signNote(formatCheckpointText({ origin: 'mallory', treeSize: 1, rootHash: root1, time }), 'mallory', privateKey);
        files.set('group-checkpoints.jsonl', Buffer.concat([files.get('group-checkpoints.jsonl')!, Buffer.from(`${JSON.stringify({ gateway: mallory, treeSize: 1, time, rootHash: root1.toString('hex'), note })}\n`)]));
      }),
      '--keys',
      keysFile,
    );
    assert.equal(forged.status, 1);
    assert.deepEqual(failures(forged.stderr), [`custody verify: FAILED: unapproved-signer — chain ${mallory} (mallory) is signed by a key the verifier does not trust: its key is not pinned and no trusted gateway approved it`], forged.stderr);
  });

  it('ocsf.jsonl and holds.json are held to the events, even under a manifest signed again', async () => {
    assert.ok(bundle, 'the bundle of the first test');
    const base = readTar(readFileSync(bundle));
    const events = groupEvents(base);
    const of = (m: Member, kind: string) => events.find((e) => e.gateway === m.id && e.kind === kind && e.payload['id'] === heldId)!;
    const [created, vote, resolved] = [of(a, 'hold.created'), of(b, 'hold.vote'), of(a, 'hold.resolved')];
    const request = ocsfRecords(base).find((r) => r.unmapped.custody.gateway === a.id && r.unmapped.custody.kind === 'http.request')!;
    const requestSeq = request.unmapped.custody.seq;
    const operation = (request['api'] as { operation: string }).operation;
    const last = ocsfRecords(base).filter((r) => r.unmapped.custody.gateway === c.id).at(-1)!;
    const records = ocsfRecords(base).length;
    type Listed = HoldView & { gatewayName?: string };
    const editHold = (files: Map<string, Buffer>, change: (h: Listed) => Listed) =>
      files.set('holds.json', Buffer.from(`${JSON.stringify((JSON.parse(files.get('holds.json')!.toString('utf8')) as Listed[]).map((h) => (h.id === heldId ? change(h) : h)), null, 2)}\n`));
    const corpus: { name: string; change: (files: Map<string, Buffer>) => void; expect: string }[] = [
      {
        name: 'an OCSF record of A edited',
        change: (f) => setOcsf(f, ocsfRecords(f).map((r) => (r.unmapped.custody.gateway !== a.id || r.unmapped.custody.seq !== requestSeq ? r : { ...r, api: { ...(r['api'] as object), operation: 'GET /echo/nothing-to-see' } }))),
        expect: `ocsf.jsonl line ${ocsfLine(base, a.id!, requestSeq)} (chain ${a.id} seq ${requestSeq}): api.operation is "GET /echo/nothing-to-see", but the event (http.request) maps to ${JSON.stringify(operation)}`,
      },
      {
        name: 'an OCSF record added for an event of C the bundle does not export',
        change: (f) => setOcsf(f, [...ocsfRecords(f), { ...last, metadata: { ...last.metadata, uid: `${c.id}#10000` }, unmapped: { custody: { ...last.unmapped.custody, seq: 10_000 } } }]),
        expect: `ocsf.jsonl line ${records + 1} (chain ${c.id} seq 10000): the bundle exports no such event of that chain`,
      },
      {
        name: "the OCSF record of A's hold.resolved removed",
        change: (f) => setOcsf(f, ocsfRecords(f).filter((r) => r.unmapped.custody.gateway !== a.id || r.unmapped.custody.seq !== resolved.seq)),
        expect: `ocsf.jsonl (chain ${a.id} seq ${resolved.seq}): no record of this exported event (hold.resolved)`,
      },
      {
        name: "B's vote removed from A's hold",
        change: (f) => editHold(f, (h) => ({ ...h, votes: [] })),
        expect: `holds.json hold ${heldId} (chain ${b.id} seq ${vote.seq}): the vote that hold.vote records (${String(vote.payload['byName'])}: approve, ${new Date(vote['time'] as number).toISOString()}) is missing from its votes`,
      },
      {
        name: "A's hold flipped to denied",
        change: (f) => editHold(f, (h) => ({ ...h, state: 'denied' })),
        expect: `holds.json hold ${heldId} (chain ${a.id} seq ${resolved.seq}): its state is denied, but its hold.resolved says approved`,
      },
      {
        name: "A's hold said to be C's",
        change: (f) => editHold(f, (h) => ({ ...h, gateway: c.id! })),
        expect: `holds.json hold ${heldId} (chain ${c.id}): its gateway is ${c.id}, but its hold.created is at seq ${created.seq} of chain ${a.id}`,
      },
    ];
    for (const t of corpus) {
      const r = await verify(await tampered(bundle, `derived-${corpus.indexOf(t)}.tar.gz`, t.change), '--keys', keysFile);
      assert.equal(r.status, 1, `${t.name}: ${r.stdout}`);
      assert.deepEqual(failures(r.stderr), [`custody verify: FAILED: derived-mismatch — ${t.expect}`], `${t.name}: ${r.stderr}`);
    }
  });

  it("carry the group log's witness cosignatures, and verify --witness-key holds the bundle to them", async () => {
    const group = (await sql.query<{ group_id: string }>('SELECT group_id FROM custody_group')).rows[0]!.group_id;
    const origin = `custody-group-log/${group}`;
    // The witness, given the group log key of every member and B's own key (gateways on one host share an origin: one own log per witness).
    const shown = await verify('--store', db.url, '--show-keys', '--json');
    assert.equal(shown.status, 0, shown.stderr);
    const rows = JSON.parse(shown.stdout) as { id: string; verifierKey: string; groupLogKey: string }[];
    witness = await startWitness(root, 'w1', [...rows.map((r) => r.groupLogKey), rows.find((r) => r.id === b.id)!.verifierKey]);
    witnessKey = witness.key;

    // A bundle cut while no witness was configured (the first test's) carries no cosignature of the group log.
    const none = await verify(bundle, '--keys', keysFile, '--witness-key', witnessKey);
    assert.equal(none.status, 1);
    assert.ok(failures(none.stderr).includes(`custody verify: FAILED: unwitnessed — no head of the group log (${origin}) in the bundle is cosigned by witness ${WITNESS} (its cosignatures were removed, or it never received one)`), none.stderr);
    assert.equal((await verify(bundle, '--keys', keysFile)).status, 0, 'without --witness-key it passes');

    // The witness added to every member's configuration.
    for (const m of [a, b, c]) {
      assert.equal(await m.gw!.stop(), 0);
      serving.splice(serving.indexOf(m.gw!), 1);
      writeConfig(m.dir, configOf(m.dir, witness.url));
      m.gw = await startServe(m.file);
      serving.push(m.gw);
      await until(`${m.name} serving again`, async () => (await send(m, 'back')).status === 200, 15_000);
    }
    const since = Date.now();
    for (const m of [a, b, c]) assert.equal((await send(m, `plain/witnessed-${m.name}`)).status, 200);
    await settled([a, b, c]);
    await until(
      'the witness cosigned the group log up to a combined checkpoint made after the restart, and a checkpoint of B',
      async () => {
        const before = Number((await sql.query<{ n: string }>('SELECT count(*) AS n FROM custody_combined_checkpoints WHERE made_at < $1', [since])).rows[0]!.n);
        const cosignedSize = Number((await sql.query<{ n: string | null }>('SELECT max(tree_size) AS n FROM custody_group_witness_cosignatures')).rows[0]!.n ?? 0);
        const own = (await api<HealthResponse>(b, keys.admin!, '/api/health')).body.audit?.witnesses[0]?.cosignedTreeSize ?? 0;
        return cosignedSize > before && own > 0;
      },
      40_000,
    );
    const witnessed = join(root, 'witnessed.tar.gz');
    await exportVia(b, witnessed);
    const ok = await verify(witnessed, '--keys', keysFile, '--witness-key', witnessKey);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`^witness ${escape(WITNESS)}: cosigned the group log of combined checkpoints at [\\d,]+ of [\\d,]+ .*; the bundle still gives every head it cosigned$`, 'm'));
    const files = readTar(readFileSync(witnessed));
    const manifest = JSON.parse(files.get('manifest.json')!.toString('utf8')) as BundleManifest;
    const cosignatures = files.get('group-witness-cosignatures.jsonl')!.toString('utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { witness: string; keyId: string; treeSize: number; checkpoint: string; signature: string; cosignedAt: number });
    assert.ok(cosignatures.length > 0 && cosignatures.every((r) => r.witness === WITNESS && r.treeSize <= manifest.group!.groupLog!), 'the cosignatures, within the group log the bundle carries');
    assert.equal(files.get('group-log.bin')!.length, manifest.group!.groupLog! * HASH_SIZE);
    const newest = Math.max(...cosignatures.map((r) => r.treeSize));
    const setCosignatures = (f: Map<string, Buffer>, list: unknown[]) => f.set('group-witness-cosignatures.jsonl', Buffer.from(list.map((r) => `${JSON.stringify(r)}\n`).join('')));
    const other = generateKeyPairSync('ed25519').privateKey;
    const otherKeyId = keyIdHex(parseCosignerKey(formatCosignerKey(WITNESS, ed25519RawPublicKey(other))).keyId);

    const corpus: { name: string; change: (files: Map<string, Buffer>, m: BundleManifest) => void; expect: RegExp }[] = [
      {
        name: 'the cosignature file removed',
        change: (f, m) => {
          f.delete('group-witness-cosignatures.jsonl');
          delete m.files['group-witness-cosignatures.jsonl'];
        },
        expect: new RegExp(`^unwitnessed — the bundle carries no witness cosignatures of the group log \\(it was exported before bundles carried them\\), so --witness-key cannot be checked against it$`),
      },
      {
        name: "a cosignature's signature byte flipped",
        change: (f) =>
          setCosignatures(
            f,
            cosignatures.map((r) => {
              if (r.treeSize !== newest) return r;
              const [dash, name, sig] = r.signature.trim().split(' ') as [string, string, string];
              const raw = Buffer.from(sig, 'base64');
              raw[raw.length - 1]! ^= 0x01;
              return { ...r, signature: `${dash} ${name} ${raw.toString('base64')}\n` };
            }),
          ),
        expect: new RegExp(`^signature-invalid — the cosignature by witness ${escape(WITNESS)} on the group log's head of ${newest} combined checkpoints: the cosignature does not verify`),
      },
      {
        name: 'the cosignatures made under another key',
        change: (f) => setCosignatures(f, cosignatures.map((r) => ({ ...r, keyId: otherKeyId, signature: cosign(r.checkpoint, WITNESS, other, Math.floor(r.cosignedAt / 1000)) }))),
        expect: new RegExp(`^unwitnessed — no head of the group log \\(${escape(origin)}\\) in the bundle is cosigned by witness ${escape(WITNESS)}`),
      },
      {
        name: 'the newest combined checkpoint the witness cosigned dropped, with its leaf and every one after it',
        change: (f, m) => {
          const kept = f.get('group-combined.jsonl')!.toString('utf8').split('\n').filter(Boolean).slice(0, newest - 1);
          f.set('group-combined.jsonl', Buffer.from(kept.map((l) => `${l}\n`).join('')));
          f.set('group-log.bin', f.get('group-log.bin')!.subarray(0, (newest - 1) * HASH_SIZE));
          m.group!.groupLog = newest - 1;
          m.group!.combined = newest - 1;
        },
        expect: new RegExp(`^deleted — combined checkpoints? (${newest}|${newest}–\\d+) (was|were) deleted: witness ${escape(WITNESS)} cosigned the group log's head of \\d+ combined checkpoints`),
      },
    ];
    for (const t of corpus) {
      const r = await verify(await tampered(witnessed, `witness-${corpus.indexOf(t)}.tar.gz`, t.change), '--keys', keysFile, '--witness-key', witnessKey);
      assert.equal(r.status, 1, `${t.name}: ${r.stdout}`);
      const found = failures(r.stderr).map((l) => l.replace('custody verify: FAILED: ', ''));
      assert.equal(found.length, 1, `${t.name}: ${r.stderr}`);
      assert.match(found[0]!, t.expect, t.name);
    }
    // Without the witness key, the bundle lacking the file verifies as one exported before it.
    assert.equal((await verify(await tampered(witnessed, 'witness-none.tar.gz', (f, m) => (f.delete('group-witness-cosignatures.jsonl'), delete m.files['group-witness-cosignatures.jsonl'])), '--keys', keysFile)).status, 0);

    // A filtered bundle carries some combined checkpoints, and the group log's every leaf: the witness check holds.
    const filtered = join(root, 'witnessed-filtered.tar.gz');
    await exportVia(b, filtered, { from: since });
    const fm = JSON.parse(readTar(readFileSync(filtered)).get('manifest.json')!.toString('utf8')) as BundleManifest;
    assert.ok(fm.group!.combined < fm.group!.groupLog!, `${fm.group!.combined} of ${fm.group!.groupLog} combined checkpoints carried`);
    const fv = await verify(filtered, '--keys', keysFile, '--witness-key', witnessKey);
    assert.equal(fv.status, 0, fv.stderr);
    assert.match(fv.stdout, new RegExp(`^witness ${escape(WITNESS)}: cosigned the group log`, 'm'));
  });

  it('custody export on a stopped gateway cuts a filtered bundle of the group that verifies', async () => {
    const since = Date.now();
    for (const m of [a, b, c]) assert.equal((await send(m, `plain/late-${m.name}`)).status, 200);
    await settled([a, b, c]);
    assert.equal(await c.gw!.stop(), 0);
    serving.splice(serving.indexOf(c.gw!), 1);
    const out = join(root, 'from-c.tar.gz');
    const r = await custody('export', '--config', c.file, '--out', out, '--from', String(since));
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /the group: 3 chains \(.*\), [\d,]+ of their events, [\d,]+ combined checkpoints?/);
    const files = readTar(readFileSync(out));
    const manifest = JSON.parse(files.get('manifest.json')!.toString('utf8')) as BundleManifest;
    assert.equal(manifest.group!.full, false);
    const events = groupEvents(files);
    for (const m of [a, b]) assert.ok(events.some((e) => e.gateway === m.id && e.kind === 'http.request' && JSON.stringify(e.payload).includes(`late-${m.name}`)), `${m.name}'s request in the window`);
    assert.ok(!events.some((e) => e.kind === 'hold.created'), 'the hold, before the window, is carried by its hash only');
    assert.ok(events.some((e) => e.gateway === a.id && e.kind === 'gateway.approved'), 'the approvals, outside the window, are carried: they say who may sign');
    for (const x of manifest.group!.chains) assert.ok(x.events < x.size, `${x.name}: ${x.events} of ${x.size} rows`);
    // OCSF, as the exporting gateway's part, follows the filter: the other chains' records are their
    // events in the window, not the approvals carried outside it to say who may sign.
    const perChain = ocsfByChain(files);
    for (const m of [a, b]) assert.equal(perChain.get(m.id), events.filter((e) => e.gateway === m.id && (e['time'] as number) >= since).length, `${m.name}: OCSF records of the window`);
    assert.equal(perChain.get(c.id), manifest.events, "C's own: its events.jsonl");
    assert.ok(!ocsfRecords(files).some((r) => r.unmapped.custody.kind === 'gateway.approved'), 'no approval outside the window');
    assert.deepEqual(JSON.parse(files.get('holds.json')!.toString('utf8')), [], "A's hold, created before the window, is not in holds.json");
    const v = await verify(out, '--keys', keysFile);
    assert.equal(v.status, 0, v.stderr);
    assert.match(v.stdout, /^OK: bundle .* \(filtered export\)/m);
    assert.match(v.stdout, /^OK: the group's chains in .* are intact: 3 chains/m);
  });

  it('a tail deleted in the store: verify --store and a bundle exported after it say the same', async () => {
    await settled([a, b]);
    // The last two rows of C's chain that the newest combined checkpoint committed to, and any after them.
    const newest = (await sql.query<{ note: string }>('SELECT note FROM custody_combined_checkpoints ORDER BY interval_start DESC LIMIT 1')).rows[0]!.note;
    const size = parseCombinedText(parseNote(newest).text).heads.find((h) => h.gateway === c.id)!.size;
    await sql.query('DELETE FROM custody_events WHERE gateway = $1 AND seq > $2', [c.id, size - 2]);
    const store = await verify('--store', db.url, '--keys', keysFile);
    assert.equal(store.status, 1);
    const out = join(root, 'after-delete.tar.gz');
    await exportVia(b, out);
    const fromBundle = await verify(out, '--keys', keysFile);
    assert.equal(fromBundle.status, 1);
    const findings = (stderr: string) => failures(stderr).map((l) => l.replace(/the (store|bundle)('s)? /g, 'the $2 '));
    assert.ok(findings(store.stderr).some((l) => l.includes(`truncated — chain ${c.id} at seq ${size - 1}`)), store.stderr);
    assert.deepEqual(findings(fromBundle.stderr), findings(store.stderr));
  });

  it('a bundle from before group bundles, and one from a gateway without a store, verify as they always did', async () => {
    const fixture = 'test/fixtures/bundles/single-gateway-before-groups.tar.gz';
    const old = await verify(fixture, '--key', 'SHA256:YugZaucW5pAcUHru4sKLYI/tuNJQq3RI834H5M0qE/E');
    assert.equal(old.status, 0, old.stderr);
    assert.match(old.stdout, /^OK: bundle .* is intact: 10 events/m);
    assert.doesNotMatch(old.stdout, /group's chains/);
    const withKeys = await verify(fixture, '--keys', keysFile);
    assert.equal(withKeys.status, 1);
    assert.match(withKeys.stderr, /was not exported in a group \(it carries one chain\): --keys does not apply; pin its key with --key/);
    // Tampered, it still fails at the seq, as before.
    const files = readTar(readFileSync(fixture));
    const lines = files.get('events.jsonl')!.toString('utf8').split('\n');
    lines[2] = lines[2]!.replace('card', 'cart');
    files.set('events.jsonl', Buffer.from(lines.join('\n')));
    const bad = join(root, 'old-tampered.tar.gz');
    await writeTarGz(bad, [...files].map(([name, data]) => ({ name, data, size: data.length })));
    const badR = await verify(bad);
    assert.equal(badR.status, 1);
    assert.match(badR.stderr, /FAILED at seq 3: modified/);

    // A gateway without a store exports the same format: no group files, no group part.
    const dir = join(root, 'solo');
    mkdirSync(dir);
    const store = AuditStore.open(dir);
    const trail = openAuditTrail(store, dir, Config.parse({ audit: { origin: 'custody.test/solo' } }));
    store.append({ kind: 'auth.login', actor: 'oidc#alice', payload: { method: 'oidc', actorName: 'alice@example.com', source: '127.0.0.1' } });
    await trail.checkpoints.write();
    store.close();
    const out = join(root, 'solo.tar.gz');
    assert.equal((await custody('export', '--data-dir', dir, '--out', out)).status, 0);
    const solo = readTar(readFileSync(out));
    assert.deepEqual([...solo.keys()].sort(), [...BUNDLE_FILES].sort());
    assert.equal((JSON.parse(solo.get('manifest.json')!.toString('utf8')) as BundleManifest).group, undefined);
    assert.ok(ocsfRecords(solo).length > 0 && ocsfRecords(solo).every((r) => !('gateway' in r.unmapped.custody) && r.metadata.uid.startsWith('custody.test/solo#')), 'OCSF records as before');
    assert.doesNotMatch(solo.get('report.html')!.toString('utf8'), /<h2>(Gateways|Sessions)/, 'no per-gateway part in the report');
    const oldFiles = readTar(readFileSync(fixture));
    assert.ok(ocsfRecords(oldFiles).every((r) => !('gateway' in r.unmapped.custody)));
    const soloOk = await verify(out);
    assert.equal(soloOk.status, 0, soloOk.stderr);
    assert.match(soloOk.stdout, /^ocsf\.jsonl: [\d,]+ records?, each mapped again from its event/m);
    assert.match(old.stdout, /^ocsf\.jsonl and holds\.json: held to the manifest only \(the bundle was exported before they were derived from its events alone\)$/m);
    // A single gateway's OCSF record is held to its event too: the user's name in a login record edited, the manifest signed again with its own key.
    const login = ocsfRecords(solo).findIndex((r) => r.unmapped.custody.kind === 'auth.login');
    const loginSeq = ocsfRecords(solo)[login]!.unmapped.custody.seq;
    const fingerprint = solo.get('public-key.txt')!.toString('utf8').split('\n')[1]!;
    const soloEdited = await verify(
      await tampered(out, 'solo-ocsf.tar.gz', (f) => setOcsf(f, ocsfRecords(f).map((r, i) => (i === login ? { ...r, user: { ...(r['user'] as object), name: 'mallory@example.com' } } : r))), true, dir),
    );
    assert.equal(soloEdited.status, 1);
    assert.deepEqual(failures(soloEdited.stderr), [`custody verify: FAILED: derived-mismatch — ocsf.jsonl line ${login + 1} (chain ${fingerprint} seq ${loginSeq}): user.name is "mallory@example.com", but the event (auth.login) maps to "alice@example.com"`], soloEdited.stderr);
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

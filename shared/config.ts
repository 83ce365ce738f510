/**
 * The configuration schema. The gateway validates YAML config against it, the console's editors
 * validate against it as the user types, and `schemas/config.schema.json` is generated from it, so
 * there is exactly one definition of what a valid config is.
 */
import { z } from 'zod';
import { hintIssues } from './config-hints';

const DURATION_RE = /^(\d+)(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `500ms`, `30s`, `5m`, `1h`, `400d` into milliseconds; throws on anything else. */
export function parseDuration(text: string): number {
  const m = DURATION_RE.exec(text.trim());
  if (!m) throw new Error(`invalid duration "${text}" (expected e.g. 30s, 5m, 1h, 400d)`);
  return Number(m[1]) * UNIT_MS[m[2]!]!;
}

export const Duration = z
  .string()
  .regex(DURATION_RE, 'a duration such as 30s, 5m, 1h or 400d');

/** `host:port`, e.g. `127.0.0.1:7420`. */
export const ListenAddress = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'an address such as 127.0.0.1:7421');

/** Paths the console serves outside /api/: a connection named after one could not be told apart on the control port. */
export const RESERVED_CONNECTION_NAMES: readonly string[] = ['api', 'login', 'assets'];

export const ConnectionName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'lower-case letters, digits, "-" and "_"')
  .refine((name) => !RESERVED_CONNECTION_NAMES.includes(name), { message: 'this name is a path of the console itself; choose another connection name' });

export const SecretSource = z.union(
  [
    z.object({ env: z.string().min(1) }).strict(),
    z.object({ value: z.string() }).strict(),
    z.object({ file: z.string().min(1) }).strict(),
  ],
  { error: 'a secret reference: { env: VARIABLE }, { file: PATH } or { value: "…" }' },
);
export type SecretSource = z.infer<typeof SecretSource>;

export const TlsOptions = z
  .object({
    /** Client side (gateway → upstream): verify the upstream's certificate. */
    mode: z.enum(['disable', 'prefer', 'require', 'verify-full']).default('prefer'),
    ca: z.string().optional(),
    /** Server side (client → gateway, postgres listeners): certificate and key files. */
    cert: z.string().optional(),
    key: z.string().optional(),
  })
  .strict();

export const ConnectionKind = z.enum(['openai', 'anthropic', 'http', 'postgres', 'ssh']);

/** Kinds with a listener of their own (`listen`), rather than a path on `listen.http`. */
export const LISTENER_KINDS: readonly ConnectionKind[] = ['postgres', 'ssh'];

/** An OpenSSH host key fingerprint: `SHA256:` and the unpadded base64 of the key blob's SHA-256. */
export const HostKeyFingerprint = z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/, 'an OpenSSH fingerprint such as SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s (ssh-keygen -lf KEY.pub)');
export type ConnectionKind = z.infer<typeof ConnectionKind>;

export const Connection = z
  .object({
    name: ConnectionName,
    kind: ConnectionKind,
    /** http(s) base URL for HTTP kinds; `postgres://user@host:port/db` for postgres; `ssh://user@host:22` for ssh. */
    upstream: z.string().min(1),
    /** The upstream credential: an API key, a database password, or (ssh) a private key or a password. */
    secret: SecretSource.optional(),
    /** postgres and ssh: where the gateway listens for clients of this connection. */
    listen: ListenAddress.optional(),
    /**
     * ssh only: the upstream's host key fingerprint (`SHA256:…`). Without it the first key seen is
     * recorded in the data dir and pinned; a different key later refuses the connection.
     */
    hostKey: HostKeyFingerprint.optional(),
    tls: TlsOptions.optional(),
    description: z.string().optional(),
    /**
     * HTTP kinds: media types (`image/png`, `audio/*`) the gateway forwards without inspecting them,
     * as request bodies, multipart parts or base64 embedded in JSON. Without it, a body that cannot
     * be inspected is refused (415) wherever a masking, `content` or `detectors` rule applies.
     */
    passthroughTypes: z
      .array(z.string().regex(/^[a-z0-9][\w.+-]*\/(?:\*|[a-z0-9][\w.+-]*)$/i, 'a media type such as image/png or audio/*'))
      .optional(),
    /**
     * postgres only: the upstream role per client group (`{dev: app_readonly, dba: app_admin}`),
     * applied at upstream login; the first entry whose group the client has wins, `'*'` matches
     * everyone, and a client with no matching entry is refused.
     */
    roles: z.record(z.string().min(1), z.string().min(1)).optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.roles && c.kind !== 'postgres') ctx.addIssue({ code: 'custom', path: ['roles'], message: 'roles (upstream roles per group) apply to postgres connections only' });
    if (c.roles && Object.keys(c.roles).length === 0) ctx.addIssue({ code: 'custom', path: ['roles'], message: 'roles is empty: every client would be refused; remove it or map groups to roles' });
    if (c.hostKey && c.kind !== 'ssh') ctx.addIssue({ code: 'custom', path: ['hostKey'], message: 'hostKey (the upstream host key pin) applies to ssh connections only' });
    if (LISTENER_KINDS.includes(c.kind)) {
      if (!c.listen) ctx.addIssue({ code: 'custom', path: ['listen'], message: `a ${c.kind} connection needs listen (e.g. 127.0.0.1:${c.kind === 'ssh' ? 2222 : 6432})` });
      if (c.passthroughTypes) ctx.addIssue({ code: 'custom', path: ['passthroughTypes'], message: 'passthroughTypes applies to HTTP connections only' });
    }
    if (c.kind === 'postgres') {
      if (!/^postgres(ql)?:\/\//.test(c.upstream)) ctx.addIssue({ code: 'custom', path: ['upstream'], message: 'a postgres upstream is a URL such as postgres://app@127.0.0.1:5432/app' });
    } else if (c.kind === 'ssh') {
      if (!/^ssh:\/\/[^@/:\s]+@(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?\/?$/.test(c.upstream)) ctx.addIssue({ code: 'custom', path: ['upstream'], message: 'an ssh upstream is a URL with the login user, such as ssh://deploy@10.0.0.5:22' });
      if (c.tls) ctx.addIssue({ code: 'custom', path: ['tls'], message: 'tls does not apply to ssh connections (SSH has its own transport encryption; pin the host with hostKey)' });
    } else {
      if (c.listen) ctx.addIssue({ code: 'custom', path: ['listen'], message: 'only postgres and ssh connections have their own listener; HTTP connections share listen.http' });
      if (!/^https?:\/\//.test(c.upstream)) ctx.addIssue({ code: 'custom', path: ['upstream'], message: 'an HTTP upstream is a URL such as https://api.openai.com/v1' });
    }
  });
export type Connection = z.infer<typeof Connection>;

export const Role = z.enum(['admin', 'approver', 'reviewer', 'user']);
export type Role = z.infer<typeof Role>;

export const OidcIssuer = z
  .object({
    issuer: z.string().url(),
    /** Expected `aud` of bearer tokens (API clients). */
    audience: z.string().min(1),
    groupsClaim: z.string().default('groups'),
    /** Console sign-in (authorization code + PKCE); omitted: bearer tokens only. */
    clientId: z.string().optional(),
    clientSecret: SecretSource.optional(),
    /** Label on the login page: "Sign in with <name>". */
    name: z.string().optional(),
    algorithms: z.array(z.string()).default(['RS256', 'ES256', 'PS256', 'EdDSA']),
    clockSkew: Duration.default('60s'),
    /**
     * The claim that names a person in `users:` rules and on screen, qualified by the issuer:
     * `sub` (default), `email` (accepted only when `email_verified` is true), `oid` (Entra ID).
     */
    userClaim: z.enum(['sub', 'email', 'oid']).default('sub'),
  })
  .strict();
export type OidcIssuer = z.infer<typeof OidcIssuer>;

export const Identity = z
  .object({
    apiKeys: z.boolean().default(true),
    oidc: z.array(OidcIssuer).default([]),
    /**
     * Who counts toward a hold's approvals: every person (`person`, the default), or only persons
     * an OIDC issuer vouches for (`idp`), for teams that do not trust locally minted identities.
     */
    separationOfDuties: z.enum(['person', 'idp']).default('person'),
    /** Which groups hold which role; only these (no implicit group). */
    roles: z
      .object({
        admin: z.array(z.string()).default(['admin']),
        approver: z.array(z.string()).default(['approver']),
        reviewer: z.array(z.string()).default(['reviewer']),
      })
      .strict()
      .default({ admin: ['admin'], approver: ['approver'], reviewer: ['reviewer'] }),
  })
  .strict();

export const MaskScope = z.enum(['client', 'upstream', 'log']);
export type MaskScope = z.infer<typeof MaskScope>;

export const MaskStrategy = z.enum(['redact', 'mask', 'hash']);
export type MaskStrategy = z.infer<typeof MaskStrategy>;

export const MaskingRule = z
  .object({
    id: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, ".", "-" and "_"'),
    detectors: z.array(z.string()).default([]),
    scope: z.array(MaskScope).min(1).default(['client', 'upstream', 'log']),
    strategy: MaskStrategy.default('redact'),
    /** `mask` strategy: characters left visible at the end. */
    keepLast: z.number().int().min(0).max(8).default(4),
    /** Omitted: every connection. */
    connections: z.array(ConnectionName).optional(),
    /** PostgreSQL column rules: `users.ssn`, `*.email`. Matched values are masked whole. */
    columns: z.array(z.string()).optional(),
    /** Generic JSON bodies (http connections): JSONPath-like `$.items[*].text`. */
    jsonPaths: z.array(z.string()).optional(),
  })
  .strict();
export type MaskingRule = z.infer<typeof MaskingRule>;

export const CustomDetector = z
  .object({
    id: z.string().regex(/^[a-z0-9_]+$/, 'lower-case letters, digits and "_"'),
    /** Type name shown in redactions and replay; defaults to the id upper-cased. */
    type: z.string().optional(),
    pattern: z.string().optional(),
    /** Name of a built-in validator (luhn, iban, aba, ...). */
    validator: z.string().optional(),
    dictionary: z.array(z.string()).optional(),
    caseSensitive: z.boolean().default(false),
    /** Words near a match that raise (or, with `negative`, lower) confidence. */
    context: z.array(z.string()).optional(),
    negativeContext: z.array(z.string()).optional(),
    /** When context words are given: require one within this many characters. */
    contextWindow: z.number().int().positive().default(40),
  })
  .strict()
  .refine((d) => d.pattern !== undefined || d.dictionary !== undefined, {
    message: 'a custom detector needs a pattern or a dictionary',
  });
export type CustomDetector = z.infer<typeof CustomDetector>;

export const SqlClass = z.enum([
  'select',
  'insert',
  'update',
  'delete',
  'merge',
  'copy',
  'ddl',
  'drop',
  'truncate',
  'alter',
  'create',
  'dcl',
  'grant',
  'revoke',
  'transaction',
  'set',
  'utility',
  'delete_without_where',
  'update_without_where',
  'data_modifying_cte',
  'reads_masked',
  /** DDL that creates or changes code the server runs later: functions, procedures, views, rules, triggers, operators, casts, policies. */
  'routine_ddl',
  /** Built-in functions with effects outside the statement's rows (nextval, set_config, pg_terminate_backend, lo_*, pg_read_file, dblink*, …), COPY to/from files and programs. */
  'side_effect',
  /** Row or table locks: SELECT … FOR UPDATE/SHARE, LOCK TABLE. */
  'lock',
  /** Changes the session's role: SET ROLE, SET SESSION AUTHORIZATION, set_config('role', …). */
  'set_role',
  /** Proven read-only: a query with no write, lock, INTO, or call that could have side effects (see docs/POSTGRES.md). */
  'read_only',
  'unknown',
]);
export type SqlClass = z.infer<typeof SqlClass>;

export const SshOperation = z.enum(['shell', 'exec', 'file_transfer', 'port_forward']);
export type SshOperation = z.infer<typeof SshOperation>;

export const PolicyMatch = z
  .object({
    connections: z.array(ConnectionName).optional(),
    users: z.array(z.string()).optional(),
    groups: z.array(z.string()).optional(),
    methods: z.array(z.string()).optional(),
    /** Glob on the path after the connection name, e.g. `/chat/completions`, `/v1/*`. */
    paths: z.array(z.string()).optional(),
    model: z.array(z.string()).optional(),
    /** true: only requests that carry tool calls/definitions; false: only those that do not. */
    tools: z.boolean().optional(),
    sql: z.array(SqlClass).optional(),
    /** Regular expression over the request's text; `(?i)` prefix for case-insensitive. */
    content: z.string().optional(),
    /** Masking detector ids that must have found something in the request. */
    detectors: z.array(z.string()).optional(),
    /**
     * SSH exec commands as the shell will run them: globs over each simple command's words after
     * wrappers (`sudo`, `env`, …) are unwrapped, e.g. `systemctl status *`. An `allow` rule matches
     * when every command matches one; `deny`/`hold` when any does, or when any is `unknown`.
     */
    commands: z.array(z.string().min(1)).optional(),
    /** SSH operations: an interactive shell, an exec, a file transfer (any road), port forwarding. */
    ssh: z.array(SshOperation).optional(),
  })
  .strict();
export type PolicyMatch = z.infer<typeof PolicyMatch>;

export const HoldSpec = z
  .object({
    approvers: z.array(z.string()).min(1),
    min: z.number().int().min(1).default(1),
    /** Denials needed to deny; default 1 (any approver's denial ends the hold). */
    denyMin: z.number().int().min(1).default(1),
    timeout: Duration.default('5m'),
    reason: z.enum(['required', 'optional']).default('optional'),
  })
  .strict();
export type HoldSpec = z.infer<typeof HoldSpec>;

export const PolicyAction = z.enum(['allow', 'deny', 'mask', 'hold']);
export type PolicyAction = z.infer<typeof PolicyAction>;

export const PolicyRule = z
  .object({
    name: z.string().min(1),
    match: PolicyMatch.default({}),
    action: PolicyAction,
    reason: z.string().optional(),
    /** action `mask`: masking rule ids applied to matching requests. */
    mask: z.array(z.string()).optional(),
    hold: HoldSpec.optional(),
  })
  .strict()
  .superRefine((r, ctx) => {
    if (r.action === 'hold' && !r.hold) ctx.addIssue({ code: 'custom', path: ['hold'], message: 'action hold needs hold: { approvers: [...] }' });
    if (r.action === 'mask' && !r.mask?.length) ctx.addIssue({ code: 'custom', path: ['mask'], message: 'action mask needs mask: [masking rule ids]' });
  });
export type PolicyRule = z.infer<typeof PolicyRule>;

export const Retention = z
  .object({
    payloadsAfter: Duration.optional(),
    /**
     * How long each sealed archive segment stays locked in the bucket (S3 Object Lock retain-until
     * date, counted from when it is sealed). Needs audit.archive; applied where the bucket has
     * Object Lock enabled.
     */
    archiveFor: Duration.optional(),
  })
  .strict();

/** A tlog-witness: `key` is its cosigner verifier key (`name+id+base64(0x04 ‖ key)`). */
export const AuditWitness = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'letters, digits, ".", "_" or "-"'),
    url: z.string().regex(/^https?:\/\/[^\s]+$/, 'the witness URL prefix, such as https://witness.example:7430'),
    key: z.string().regex(/^[^\s+]+\+[0-9a-f]{8}\+[A-Za-z0-9+/=]+$/, 'a witness verifier key: <name>+<8 hex digits>+<base64 key>'),
  })
  .strict();

/**
 * An external Ed25519 signer for the checkpoint key (docs/AUDIT.md, "A signing key the host cannot
 * copy"): a program that reads the exact bytes to sign on stdin and writes the 64-byte signature
 * (raw, or base64 on one line) to stdout — a PKCS#11 token through pkcs11-tool
 * (scripts/pkcs11-sign.sh), a cloud KMS through its CLI. The private key stays there; `publicKey`
 * pins the key every signature must verify under.
 */
export const AuditSigner = z
  .object({
    /** The program and its arguments (no shell): `[program, arg, ...]`. */
    command: z.array(z.string().min(1)).min(1),
    /** The verifier key line (`<name>+<8 hex digits>+<base64>`) or the base64 raw 32-byte Ed25519 public key. */
    publicKey: z
      .string()
      .trim()
      .regex(/^(?:[^\s+]+\+[0-9a-f]{8}\+[A-Za-z0-9+/=]+|[A-Za-z0-9+/]{43}=)$/, 'a verifier key (<name>+<8 hex digits>+<base64 key>) or a base64 raw Ed25519 public key (44 characters)'),
    /** How long one signature may take before the attempt counts as failed (the program is killed). */
    timeout: Duration.default('10s'),
  })
  .strict();
export type AuditSigner = z.infer<typeof AuditSigner>;

/** A SIEM sink: syslog (tcp:// or tls://), http(s) webhook (optionally a Splunk HEC or Datadog preset), or nats://. */
export const AuditSink = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'letters, digits, ".", "_" or "-"'),
    kind: z.enum(['syslog', 'http', 'nats']),
    url: z.string().url('a URL such as tls://siem.example:6514 or https://hooks.example/custody'),
    /** http: the HMAC key (generic), the HEC token (splunk) or the API key (datadog). */
    secret: z.string().min(1).optional(),
    preset: z.enum(['splunk', 'datadog']).optional(),
    /** syslog and nats over tls://: a PEM file of the CA that signs the receiver's certificate (default: the system's CAs). */
    ca: z.string().min(1).optional(),
  })
  .strict()
  .superRefine((s, ctx) => {
    const scheme = s.url.split(':')[0]!.toLowerCase();
    const allowed = { syslog: ['tcp', 'tls'], http: ['http', 'https'], nats: ['nats'] }[s.kind];
    if (!allowed.includes(scheme)) ctx.addIssue({ code: 'custom', path: ['url'], message: `a ${s.kind} sink's URL starts with ${allowed.map((a) => `${a}://`).join(' or ')}` });
    if (s.ca && s.kind === 'http') ctx.addIssue({ code: 'custom', path: ['ca'], message: 'ca applies to syslog and nats sinks over tls://; an https sink uses the system CAs (or NODE_EXTRA_CA_CERTS)' });
    if (s.preset && s.kind !== 'http') ctx.addIssue({ code: 'custom', path: ['preset'], message: 'preset applies to http sinks only' });
    if (s.preset && !s.secret) ctx.addIssue({ code: 'custom', path: ['secret'], message: `the ${s.preset} preset needs secret (the ${s.preset === 'splunk' ? 'HEC token' : 'API key'})` });
  });

/** S3 bucket names: 3–63 lower-case letters, digits, "." and "-", starting and ending with a letter or digit. */
const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/**
 * Sealed archive segments in object storage (docs/AUDIT.md, "Archive"): every `every`, the events
 * since the last segment are sealed with a signed checkpoint and uploaded through the S3 API.
 */
export const AuditArchive = z
  .object({
    s3: z
      .object({
        bucket: z.string().regex(BUCKET_RE, 'an S3 bucket name: 3–63 lower-case letters, digits, "." and "-"'),
        /** Key prefix the segments go under (`<prefix>/segments/…`); no leading "/". */
        prefix: z
          .string()
          .regex(/^([A-Za-z0-9!_.*'()-]+\/)*[A-Za-z0-9!_.*'()-]*\/?$/, 'a key prefix such as custody/prod: letters, digits and !_.*\'()- between single "/", no leading "/"')
          .refine((p) => !p.split('/').some((part) => part === '.' || part === '..'), { message: 'a key prefix cannot hold "." or ".." segments' })
          .default(''),
        /** An S3-compatible endpoint (MinIO, Ceph, R2…); default: AWS for the region. */
        endpoint: z.string().regex(/^https?:\/\/[^\s/]+\/?$/, 'an endpoint URL such as https://s3.eu-central-1.amazonaws.com or http://127.0.0.1:9000').optional(),
        region: z.string().regex(/^[a-z0-9-]{2,32}$/, 'a region such as eu-central-1').optional(),
        /** Path-style URLs (`<endpoint>/<bucket>/<key>`); default: on when endpoint is given. */
        forcePathStyle: z.boolean().optional(),
        /** Default: the AWS SDK's own chain (AWS_ACCESS_KEY_ID…, ~/.aws, instance roles). */
        credentials: z
          .object({
            accessKeyId: SecretSource,
            secretAccessKey: SecretSource,
            sessionToken: SecretSource.optional(),
          })
          .strict()
          .optional(),
      })
      .strict(),
    /** How often a segment is sealed. */
    every: Duration.default('1h'),
    /** S3 Object Lock mode for the retention date retention.archiveFor sets. */
    lockMode: z.enum(['COMPLIANCE', 'GOVERNANCE']).default('COMPLIANCE'),
  })
  .strict()
  .superRefine((a, ctx) => {
    if (DURATION_RE.test(a.every) && parseDuration(a.every) < 1000) ctx.addIssue({ code: 'custom', path: ['every'], message: 'seal segments at most once a second (every: 1s or more)' });
  });
export type AuditArchive = z.infer<typeof AuditArchive>;

/**
 * The shared store several gateways write to (docs/SCALE-OUT.md): a PostgreSQL URL without a
 * password, which comes from `secret`. Without it the embedded SQLite file is the only store.
 */
export const StoreConfig = z
  .object({
    url: z.string().superRefine((text, ctx) => {
      const problem = storeUrlProblem(text);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }),
    /** The store's password, never written in the URL. */
    secret: SecretSource.optional(),
    /**
     * A gateway that has not heard from the store for this long admits nothing new: it can no
     * longer confirm that keys and revocations are current (docs/SCALE-OUT.md).
     */
    staleAfter: Duration.default('5s'),
    /**
     * The gateways (key fingerprints, as `custody gateways list` and `custody verify --show-keys`
     * show them) whose approvals admit this gateway to the group. Without it, a joining gateway
     * proves its approval from the one gateway the store lists as enrolled (trust on first use).
     * A gateway this list does not name never founds a group on an empty store.
     */
    trust: z.array(z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/, 'a gateway key fingerprint such as SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s (custody gateways list)')).min(1, 'list at least one gateway, or leave store.trust out').optional(),
  })
  .strict();
export type StoreConfig = z.infer<typeof StoreConfig>;

/** Why `text` cannot be a shared store URL, or undefined when it can. */
export function storeUrlProblem(text: string): string | undefined {
  const example = 'a PostgreSQL URL such as postgres://custody@db.internal:5432/custody';
  if (!/^postgres(ql)?:\/\//i.test(text)) return example;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return example;
  }
  if (!url.hostname) return `no host in the URL: ${example}`;
  if (url.password) return 'the URL holds a password: put it in store.secret ({ env: VARIABLE } or { file: PATH }), never in the URL';
  if (url.pathname.length <= 1) return `no database in the URL: ${example}`;
  return undefined;
}

export const Config = z
  .object({
    dataDir: z.string().optional(),
    listen: z
      .object({
        control: ListenAddress.default('127.0.0.1:7420'),
        http: ListenAddress.default('127.0.0.1:7421'),
      })
      .strict()
      .default({ control: '127.0.0.1:7420', http: '127.0.0.1:7421' }),
    identity: Identity.default({
      apiKeys: true,
      separationOfDuties: 'person',
      oidc: [],
      roles: { admin: ['admin'], approver: ['approver'], reviewer: ['reviewer'] },
    }),
    connections: z.array(Connection).default([]),
    /** Secret files (`secret: {file}`) allowed outside the data dir's `secrets/` folder. */
    secretFiles: z.array(z.string()).default([]),
    detectors: z.array(CustomDetector).default([]),
    masking: z.array(MaskingRule).default([]),
    policies: z.array(PolicyRule).default([]),
    retention: Retention.default({}),
    /** A shared PostgreSQL store several gateways ship their chains to (docs/SCALE-OUT.md); default: none. */
    store: StoreConfig.optional(),
    audit: z
      .object({
        /** Signed checkpoint interval; also written when idle. */
        checkpointInterval: Duration.default('1h'),
        /**
         * `none`: a journaled batch survives a crash of the gateway, not a power cut (it sits in the
         * kernel's page cache). `batch`: each batch is also fdatasync'ed before it counts as recorded,
         * one sync per batch (docs/AUDIT.md, "Durability"; its cost in docs/BENCHMARKS.md).
         */
        fsync: z.enum(['none', 'batch']).default('none'),
        /**
         * With a shared store (`store.url`): `async` (default) acknowledges a batch once it is in the
         * local journal and ships it to the store a moment later; `sync` also waits until the store
         * has committed it before the request is forwarded, and refuses the request (503 / an
         * ERROR) when it cannot (docs/SCALE-OUT.md, "What a host loss can lose").
         */
        remoteCommit: z.enum(['async', 'sync']).default('async'),
        /**
         * With a shared store (`store.url`): how often a combined checkpoint of every gateway's chain
         * is made (by whichever gateway claims the interval first) and cosigned by the others
         * (docs/SCALE-OUT.md, "The log's shape").
         */
        groupCheckpointInterval: Duration.default('5s'),
        /** C2SP checkpoint origin line; defaults to `custody/<hostname>`. */
        origin: z.string().optional(),
        /** tlog-witnesses every signed checkpoint is sent to (docs/AUDIT.md, "Witnesses"). */
        witnesses: z.array(AuditWitness).default([]),
        /** SIEM sinks every recorded event is streamed to as OCSF (docs/AUDIT.md, "Sinks"). */
        sinks: z.array(AuditSink).default([]),
        /** Sealed segments in object storage (docs/AUDIT.md, "Archive"). */
        archive: AuditArchive.optional(),
        /** Sign checkpoints with a key held outside the data dir (a PKCS#11 token, a KMS); default: a key file in the data dir. */
        signer: AuditSigner.optional(),
      })
      .strict()
      .superRefine((a, ctx) => {
        // Cosignatures are filed by the witness's key: two entries with one key would be one witness.
        const keys = new Set<string>();
        a.witnesses.forEach((w, i) => {
          if (keys.has(w.key)) ctx.addIssue({ code: 'custom', path: ['witnesses', i, 'key'], message: 'two witnesses with the same key' });
          keys.add(w.key);
        });
        for (const [key, list] of [['witnesses', a.witnesses], ['sinks', a.sinks]] as const) {
          const names = new Set<string>();
          list.forEach((w, i) => {
            if (names.has(w.name)) ctx.addIssue({ code: 'custom', path: [key, i, 'name'], message: `duplicate ${key === 'sinks' ? 'sink' : 'witness'} name "${w.name}"` });
            names.add(w.name);
          });
        }
      })
      .default({ checkpointInterval: '1h', fsync: 'none', remoteCommit: 'async', groupCheckpointInterval: '5s', witnesses: [], sinks: [] }),
    limits: z
      .object({
        maxRequestBytes: z.number().int().positive().default(10 * 1024 * 1024),
        maxResponseBytes: z.number().int().positive().default(50 * 1024 * 1024),
        /** A new session starts after this much idle time for an identity on a connection. */
        sessionIdle: Duration.default('15m'),
        /** PostgreSQL: result rows recorded per statement. */
        recordRows: z.number().int().min(0).default(50),
        /** How long the gateway waits for a TCP (and TLS) connection to an upstream. */
        upstreamConnectTimeout: Duration.default('10s'),
        /**
         * HTTP: the longest the upstream may stay silent (before its response, or between two pieces
         * of it) before the gateway gives up with 504 `upstream_timeout`. Long enough for a model
         * that thinks before its first token; a stream that keeps sending is never cut.
         */
        upstreamIdleTimeout: Duration.default('10m'),
        /** SSH: output bytes recorded per exec command (stdout and stderr each); the rest is counted, not kept. */
        recordOutputBytes: z.number().int().min(0).default(64 * 1024),
        /** SSH: content recorded per file transferred (masked); path, size and SHA-256 are always recorded. */
        recordFileBytes: z.number().int().min(0).default(0),
      })
      .strict()
      .default({ maxRequestBytes: 10 * 1024 * 1024, maxResponseBytes: 50 * 1024 * 1024, sessionIdle: '15m', recordRows: 50, upstreamConnectTimeout: '10s', upstreamIdleTimeout: '10m', recordOutputBytes: 64 * 1024, recordFileBytes: 0 }),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.audit.remoteCommit === 'sync' && !c.store) ctx.addIssue({ code: 'custom', path: ['audit', 'remoteCommit'], message: 'remoteCommit: sync commits each batch to the shared store: configure store.url, or remove it' });
    if (c.retention.archiveFor && !c.audit.archive) ctx.addIssue({ code: 'custom', path: ['retention', 'archiveFor'], message: 'archiveFor locks archive segments: configure audit.archive, or remove it' });
    const seen = new Set<string>();
    c.connections.forEach((conn, i) => {
      if (seen.has(conn.name)) ctx.addIssue({ code: 'custom', path: ['connections', i, 'name'], message: `duplicate connection name "${conn.name}"` });
      seen.add(conn.name);
    });
    const ruleIds = new Set(c.masking.map((m) => m.id));
    c.policies.forEach((p, i) => {
      for (const [j, id] of (p.mask ?? []).entries())
        if (!ruleIds.has(id)) ctx.addIssue({ code: 'custom', path: ['policies', i, 'mask', j], message: `unknown masking rule "${id}"` });
      for (const [j, name] of (p.match.connections ?? []).entries())
        if (!seen.has(name)) ctx.addIssue({ code: 'custom', path: ['policies', i, 'match', 'connections', j], message: `unknown connection "${name}"` });
    });
    c.masking.forEach((m, i) => {
      for (const [j, name] of (m.connections ?? []).entries())
        if (!seen.has(name)) ctx.addIssue({ code: 'custom', path: ['masking', i, 'connections', j], message: `unknown connection "${name}"` });
    });
  });
export type Config = z.infer<typeof Config>;
export type ConfigInput = z.input<typeof Config>;

/** One problem found while validating a config, with the path to the field. */
export interface ConfigIssue {
  path: (string | number)[];
  message: string;
}

export function validateConfig(value: unknown): { ok: true; config: Config } | { ok: false; issues: ConfigIssue[] } {
  const r = Config.safeParse(value ?? {});
  if (r.success) return { ok: true, config: r.data };
  return {
    ok: false,
    issues: hintIssues(Config, r.error.issues),
  };
}

export function formatIssuePath(path: (string | number)[]): string {
  return path.reduce<string>((s, p) => (typeof p === 'number' ? `${s}[${p}]` : s ? `${s}.${p}` : p), '');
}

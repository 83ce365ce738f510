/**
 * The archive's object storage: an S3 bucket (AWS, or any S3-compatible store through `endpoint`)
 * behind the few operations the archiver and the archive verifier need. The AWS SDK v3 is loaded
 * on first use, so a gateway without an archive never loads it.
 *
 * Uploads carry Content-MD5, which S3 requires for writes with Object Lock parameters and which
 * makes the store refuse a body damaged on the way. Checksums the SDK would add on its own
 * (flexible checksums, aws-chunked bodies) are left to "when required": several S3-compatible
 * stores do not implement them.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import type { AuditArchive } from '../../../shared/config';
import { readSecret } from '../../config';

/** Where an archive lives and how to reach it; secrets already resolved. */
export interface S3Location {
  bucket: string;
  /** Key prefix without leading or trailing "/" ('' for the bucket's root). */
  prefix: string;
  endpoint?: string;
  region?: string;
  forcePathStyle?: boolean;
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
}

/** The configured archive's location, its credentials read from their secret references (a ConfigError names a missing one). */
export function archiveLocation(archive: AuditArchive): S3Location {
  const { s3 } = archive;
  const c = s3.credentials;
  const credentials = c
    ? {
        accessKeyId: readSecret(c.accessKeyId, 'audit.archive.s3.credentials.accessKeyId')!,
        secretAccessKey: readSecret(c.secretAccessKey, 'audit.archive.s3.credentials.secretAccessKey')!,
        ...(c.sessionToken ? { sessionToken: readSecret(c.sessionToken, 'audit.archive.s3.credentials.sessionToken') } : {}),
      }
    : undefined;
  return { bucket: s3.bucket, prefix: normalizePrefix(s3.prefix), endpoint: s3.endpoint, region: s3.region, forcePathStyle: s3.forcePathStyle, credentials };
}

export type LockMode = 'COMPLIANCE' | 'GOVERNANCE';

/** Whether the bucket can hold objects under a retention date (S3 Object Lock). */
export interface ObjectLockSupport {
  state: 'enabled' | 'absent' | 'unknown';
  detail: string;
}

export interface StoredObject {
  key: string;
  size: number;
}

export class ObjectStoreError extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'ObjectStoreError';
  }
}

/** `s3://bucket/some/prefix` → bucket and prefix; throws on anything else. */
export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  if (!m) throw new ObjectStoreError(`${url}: not an archive address (expected s3://bucket/prefix)`);
  return { bucket: m[1]!, prefix: normalizePrefix(m[2] ?? '') };
}

export function normalizePrefix(prefix: string): string {
  return prefix.replace(/^\/+|\/+$/g, '');
}

export function describeLocation(loc: Pick<S3Location, 'bucket' | 'prefix' | 'endpoint'>): string {
  return `s3://${loc.bucket}${loc.prefix ? `/${loc.prefix}` : ''}${loc.endpoint ? ` at ${loc.endpoint}` : ''}`;
}

const TIMEOUTS = { connectionTimeout: 10_000, requestTimeout: 120_000 };

/** One bucket, reached through the AWS SDK v3. */
export class S3ObjectStore {
  private client?: Promise<{ sdk: typeof import('@aws-sdk/client-s3'); client: S3Client }>;

  constructor(readonly location: S3Location) {}

  get description(): string {
    return describeLocation(this.location);
  }

  /** `<prefix>/<name>`, or `<name>` when the prefix is empty. */
  key(name: string): string {
    return this.location.prefix ? `${this.location.prefix}/${name}` : name;
  }

  /** Uploads a file; with `lock`, under an Object Lock retention date. Returns the object's version, where the bucket keeps versions. */
  async putFile(key: string, file: string, opts: { lock?: { mode: LockMode; retainUntil: Date }; signal?: AbortSignal } = {}): Promise<{ versionId?: string }> {
    const { sdk, client } = await this.sdk();
    const md5 = createHash('md5');
    for await (const chunk of createReadStream(file)) md5.update(chunk as Buffer);
    const res = await this.call(`upload ${key}`, () =>
      client.send(
        new sdk.PutObjectCommand({
          Bucket: this.location.bucket,
          Key: key,
          Body: createReadStream(file),
          ContentLength: statSync(file).size,
          ContentMD5: md5.digest('base64'),
          ContentType: 'application/gzip',
          ...(opts.lock ? { ObjectLockMode: opts.lock.mode, ObjectLockRetainUntilDate: opts.lock.retainUntil } : {}),
        }),
        { abortSignal: opts.signal },
      ),
    );
    return { versionId: res.VersionId };
  }

  /** Downloads an object to a file; returns its size. */
  async getToFile(key: string, file: string, signal?: AbortSignal): Promise<number> {
    const { sdk, client } = await this.sdk();
    const res = await this.call(`download ${key}`, () => client.send(new sdk.GetObjectCommand({ Bucket: this.location.bucket, Key: key }), { abortSignal: signal }));
    if (!res.Body) throw new ObjectStoreError(`download ${key}: the store answered without a body`);
    await pipeline(res.Body as Readable, createWriteStream(file, { mode: 0o600 }));
    return statSync(file).size;
  }

  /** Every object under `<prefix>/<under>`, in key order. */
  async list(under: string, signal?: AbortSignal): Promise<StoredObject[]> {
    const { sdk, client } = await this.sdk();
    const out: StoredObject[] = [];
    let token: string | undefined;
    do {
      const res = await this.call(`list ${this.key(under)}`, () =>
        client.send(new sdk.ListObjectsV2Command({ Bucket: this.location.bucket, Prefix: this.key(under), ContinuationToken: token }), { abortSignal: signal }),
      );
      for (const o of res.Contents ?? []) if (o.Key) out.push({ key: o.Key, size: o.Size ?? 0 });
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
    } while (token);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** Asks the bucket for its Object Lock configuration. Throws only when the bucket cannot be reached. */
  async objectLock(signal?: AbortSignal): Promise<ObjectLockSupport> {
    const { sdk, client } = await this.sdk();
    try {
      const res = await client.send(new sdk.GetObjectLockConfigurationCommand({ Bucket: this.location.bucket }), { abortSignal: signal });
      if (res.ObjectLockConfiguration?.ObjectLockEnabled === 'Enabled') return { state: 'enabled', detail: 'the bucket has Object Lock enabled' };
      return { state: 'absent', detail: 'the bucket does not have Object Lock enabled' };
    } catch (err) {
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      if (e.name === 'ObjectLockConfigurationNotFoundError') return { state: 'absent', detail: 'the bucket was created without Object Lock, so segments cannot be locked' };
      if (e.name === 'NotImplemented' || e.$metadata?.httpStatusCode === 501) return { state: 'absent', detail: 'the object store does not implement Object Lock' };
      if (e.name === 'AccessDenied' || e.$metadata?.httpStatusCode === 403) return { state: 'unknown', detail: 'not allowed to read the bucket\'s Object Lock configuration (s3:GetBucketObjectLockConfiguration)' };
      throw this.wrap('read the Object Lock configuration', err);
    }
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.wrap(what, err);
    }
  }

  private wrap(what: string, err: unknown): ObjectStoreError {
    const e = err as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number }; cause?: { code?: string } };
    const code = e.code ?? e.cause?.code ?? e.name;
    const status = e.$metadata?.httpStatusCode;
    const detail = e.name === 'AbortError' ? 'aborted' : `${code && !e.message?.includes(code) ? `${code}: ` : ''}${e.message ?? String(err)}${status ? ` (HTTP ${status})` : ''}`;
    return new ObjectStoreError(`${this.description}: cannot ${what}: ${detail}`, code);
  }

  private sdk(): Promise<{ sdk: typeof import('@aws-sdk/client-s3'); client: S3Client }> {
    this.client ??= (async () => {
      // The SDK warns once per process that its 2027 releases will need Node 22; the gateway's runtime is not the user's choice.
      process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
      const sdk = await import('@aws-sdk/client-s3');
      const loc = this.location;
      const client = new sdk.S3Client({
        region: loc.region ?? process.env['AWS_REGION'] ?? process.env['AWS_DEFAULT_REGION'] ?? 'us-east-1',
        ...(loc.endpoint ? { endpoint: loc.endpoint } : {}),
        forcePathStyle: loc.forcePathStyle ?? !!loc.endpoint,
        ...(loc.credentials ? { credentials: loc.credentials } : {}),
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
        maxAttempts: 3,
        requestHandler: TIMEOUTS,
      });
      return { sdk, client };
    })();
    return this.client;
  }

  /** Releases the SDK's sockets. */
  async close(): Promise<void> {
    if (this.client) (await this.client).client.destroy();
  }
}

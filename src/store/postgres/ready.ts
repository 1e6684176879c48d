/**
 * Cross-process wake-ups: a transaction that makes tasks ready sends a NOTIFY on its schema's
 * channel (delivered only if it commits), and every store keeps one connection LISTENing on
 * that channel, reconnecting when it drops. Notices can be lost while that connection is down,
 * so each (re)connection wakes every worker once; the workers' slow poll stays as safety net.
 */
import { createHash, randomUUID } from 'node:crypto';
import pg from 'pg';
import type { ReadyNotice } from '../store.js';

/** The channel of a schema's wake-ups. Channel names are identifiers: at most 63 bytes. */
export function readyChannel(schema: string): string {
  const name = `dynatask_ready.${schema}`;
  return Buffer.byteLength(name) <= 63
    ? name
    : `dynatask_ready.${createHash('sha256').update(schema).digest('hex').slice(0, 40)}`;
}

/** What a notice carries; `types` is left out when the list would not fit in a payload. */
interface Payload {
  origin: string;
  namespace: string;
  types?: string[];
}

/** NOTIFY payloads must stay under 8000 bytes. */
const MAX_PAYLOAD = 7000;

/** The payload telling that tasks of `types` became ready in `namespace`, sent by `origin`. */
export function readyPayload(origin: string, namespace: string, types: string[]): string {
  const full = JSON.stringify({ origin, namespace, types } satisfies Payload);
  return Buffer.byteLength(full) <= MAX_PAYLOAD ? full : JSON.stringify({ origin, namespace });
}

const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 5000;

/**
 * One LISTEN connection, open while someone listens. Notices sent by `origin` (this store)
 * are dropped: the engine already woke this process's workers.
 */
export class ReadyListener {
  /** This store's mark on the notices it sends. */
  readonly origin = randomUUID();
  private readonly listeners = new Set<(notice: ReadyNotice) => void>();
  private client: pg.Client | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = RETRY_FIRST_MS;
  private closed = false;

  constructor(
    private readonly connection: pg.ClientConfig,
    private readonly channel: string,
  ) {}

  subscribe(listener: (notice: ReadyNotice) => void): () => void {
    this.listeners.add(listener);
    if (!this.client && !this.retryTimer && !this.closed) this.connect();
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) this.disconnect();
    };
  }

  close(): Promise<void> {
    this.closed = true;
    return this.disconnect();
  }

  private connect(): void {
    const client = new pg.Client({ ...this.connection, application_name: 'dynatask listener' });
    this.client = client;
    client.on('notification', (m) => {
      if (m.channel === this.channel && m.payload) this.received(m.payload);
    });
    // A broken connection (server restart, network) is replaced; errors are not thrown.
    client.on('error', () => this.dropped(client));
    client.on('end', () => this.dropped(client));
    client
      .connect()
      .then(() => client.query(`LISTEN "${this.channel.replaceAll('"', '""')}"`))
      .then(
        () => {
          if (this.client !== client) return;
          this.retryMs = RETRY_FIRST_MS;
          // Work may have become ready before LISTEN took effect (or while disconnected).
          this.dispatch(null);
        },
        () => this.dropped(client),
      );
  }

  private dropped(client: pg.Client): void {
    if (this.client !== client) return; // already replaced, or disconnected on purpose
    this.client = undefined;
    client.end().catch(() => {});
    if (this.closed || this.listeners.size === 0) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.closed && this.listeners.size > 0) this.connect();
    }, this.retryMs);
    this.retryTimer.unref();
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
  }

  private async disconnect(): Promise<void> {
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => {});
  }

  private received(text: string): void {
    let p: Payload;
    try {
      p = JSON.parse(text) as Payload;
    } catch {
      return; // not ours
    }
    if (p.origin === this.origin) return;
    this.dispatch(p.types ? { namespace: p.namespace, types: p.types } : null);
  }

  private dispatch(notice: ReadyNotice): void {
    for (const l of this.listeners) {
      try {
        l(notice);
      } catch (e) {
        console.error('dynatask: a ready listener threw:', e);
      }
    }
  }
}

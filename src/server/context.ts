/**
 * What every route module of the server shares: the engine, its store and the server's state.
 * The server reaches the store only through the engine, never by importing src/store.
 */
import type { TypeConfigRow } from '../engine/defs.js';
import type { Engine } from '../engine/engine.js';
import type { Auth } from './auth.js';
import type { ClaimMemory } from './claims.js';
import type { Metrics } from './metrics.js';
import type { ClaimedTaskView } from './views.js';
import type { Wakeups } from './wakeups.js';

/**
 * Per-type settings of the namespaces this server has served. This copy gives claimed tasks
 * their type's timeout (the engine decides retries from the database's settings). It is
 * reloaded now and then, since workers of other processes register types too.
 */
export class TypeSettings {
  private readonly byNamespace = new Map<string, Map<string, TypeConfigRow>>();
  private readonly lastUsed = new Map<string, number>();
  private readonly loading = new Map<string, Promise<void>>();

  constructor(private readonly engine: Engine) {}

  /** Namespaces seen so far. */
  namespaces(): string[] {
    return [...this.byNamespace.keys()];
  }

  /** Loads a namespace's settings the first time it is used. */
  ensure(namespace: string): Promise<void> {
    this.lastUsed.set(namespace, Date.now());
    if (this.byNamespace.has(namespace)) return Promise.resolve();
    let p = this.loading.get(namespace);
    if (!p) {
      p = this.load(namespace).finally(() => this.loading.delete(namespace));
      this.loading.set(namespace, p);
    }
    return p;
  }

  private async load(namespace: string): Promise<void> {
    // One read refreshes both copies: the engine's and this one.
    const rows = await this.engine.loadTypeConfigs(namespace);
    this.byNamespace.set(namespace, new Map(rows.map((r) => [r.type, r])));
  }

  /**
   * Reloads the namespaces used in the last `keepMs`, and forgets the others: a client naming
   * ever new namespaces must not make each refresh (and metrics scrape) longer.
   */
  async refresh(keepMs = 600_000): Promise<void> {
    const since = Date.now() - keepMs;
    for (const ns of this.namespaces()) {
      if ((this.lastUsed.get(ns) ?? 0) < since) {
        this.byNamespace.delete(ns);
        this.lastUsed.delete(ns);
      } else await this.load(ns);
    }
  }

  timeoutOf(namespace: string, type: string): number | null {
    return this.byNamespace.get(namespace)?.get(type)?.timeout_ms ?? null;
  }
}

export interface ServerContext {
  engine: Engine;
  /** Recent claims' answers, by claim id (see claims.ts). */
  claims: ClaimMemory<ClaimedTaskView>;
  /** The engine's store, for the reads the routes answer (`engine.store`). */
  store: Engine['store'];
  auth: Auth;
  metrics: Metrics;
  wakeups: Wakeups;
  types: TypeSettings;
  /** Safety-net re-claim interval of a long poll: wake-ups from other SQLite processes do not exist. */
  pollMs: number;
  /** Set when shutting down: claims answer empty at once, /readyz answers 503. */
  readonly draining: boolean;
  /** Records that `workerId` serves `types` (GET /v1/types shows them as served); throttled. */
  touchWorker(workerId: string, namespace: string, types: string[]): void;
  /** Forgets `workerId` (it stopped): its types are no longer served by it. */
  forgetWorker(workerId: string): Promise<void>;
}
